"""`mha-ft search` (Optuna over a recipe's space, trials as run folders, resume) and `mha-ft cv` (k-fold)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from conftest import intent_overrides
from hf_mha.data.splits import fold_split
from hf_mha.errors import UserError
from hf_mha.metrics import greater_is_better
from hf_mha.recipe import load_recipe
from hf_mha.search import STUDY, plan_search
from hf_mha.search_space import default_space, parse_space, sample
from hf_mha_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_args(tmp_path_factory, tiny_model_dir) -> list[str]:
    root = tmp_path_factory.mktemp("search-data")
    return [f"model.name={tiny_model_dir}", *intent_overrides(root),
            "train.max_steps=4", "train.per_device_train_batch_size=8", "train.use_cpu=true", "data.max_length=32"]


def search(tiny_args, out: Path, trials: int, *extra: str):
    result = runner.invoke(app, ["search", "--recipe", "quickstart", "--trials", str(trials), *tiny_args,
                                 f"output_dir={out}", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]


def test_search_writes_trial_runs_results_and_the_best_recipe(tiny_args, tmp_path):
    out = tmp_path / "search"
    result = search(tiny_args, out, 3)
    found = rows(out)
    assert [row["state"] for row in found] == ["complete"] * 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["trial-000", "trial-001", "trial-002"]
    for row in found:
        run = Path(row["run"])
        assert (run / "metrics.json").is_file()
        saved = load_recipe(str(run / "recipe.yaml"))
        assert saved.train["learning_rate"] == pytest.approx(row["values"]["train.learning_rate"])
        assert saved.search == {}  # trials are plain runs
        assert row["value"] == json.loads((run / "metrics.json").read_text())["eval_accuracy"]
    best = max(found, key=lambda row: row["value"])
    best_recipe = load_recipe(str(out / "best_recipe.yaml"))
    assert best_recipe.train["learning_rate"] == pytest.approx(best["values"]["train.learning_rate"])
    assert best_recipe.output_dir == str(out / "best")
    assert "learning_rate" in result.output and "accuracy" in result.output


def test_a_killed_search_continues_its_running_trial_in_the_same_run_folder(tiny_args, tmp_path):
    out = tmp_path / "search"
    search(tiny_args, out, 1)
    # What a search killed during its second trial leaves: a running trial in the study, its run unfinished.
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'search.db'}")
    killed = study.ask({"train.learning_rate": optuna.distributions.FloatDistribution(1e-5, 2e-4, log=True),
                        "train.warmup_steps": optuna.distributions.FloatDistribution(0.0, 0.2)})
    cut_short = out / "trials" / f"trial-{killed.number:03d}"
    killed.set_user_attr("run", str(cut_short))
    killed.set_user_attr("values", killed.params)
    search(tiny_args, out, 2)
    found = rows(out)
    assert [row["state"] for row in found] == ["complete", "killed", "complete"]
    assert found[2]["run"] == str(cut_short) and found[2]["values"] == found[1]["values"]
    assert (cut_short / "metrics.json").is_file()
    search(tiny_args, out, 3)  # a larger --trials extends the same study
    assert [row["state"] for row in rows(out)] == ["complete", "killed", "complete", "complete"]


def test_search_refuses_a_folder_holding_another_search(tiny_args, tmp_path):
    out = tmp_path / "search"
    search(tiny_args, out, 1)
    recipe = load_recipe("quickstart", [*tiny_args, f"output_dir={out}", "train.max_steps=5"])
    with pytest.raises(UserError, match="holds a search of another recipe: train.max_steps"):
        plan_search(recipe, 2)
    plan_search(recipe, 2, overwrite=True)


@pytest.mark.parametrize("space, message", [
    ({"train.learning_rate": [1e-5, 1e-3]}, "search.train.learning_rate: give one of"),
    ({"train.learning_rate": {"log_uniform": [0, 1e-3]}}, "log_uniform needs low > 0"),
    ({"train.learning_rate": {"uniform": [1e-3, 1e-5]}}, "low must be below high"),
    ({"tuning.r": {"int": [4, 8.5]}}, "int takes [low, high]"),
    ({"tuning.r": {"choice": [4, 4]}}, "a choice is given twice"),
    ({"output_dir": {"choice": ["a", "b"]}}, "a search varies keys of model, data, tuning, train, eval"),
])
def test_space_shapes_are_checked(space, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_space(space)


@pytest.mark.parametrize("extra, message", [
    ("search.train.learning_rate={choice: [1e-4, -1]}", "search.train.learning_rate: the value -1 makes an invalid "
                                                        "recipe: train.learning_rate must be > 0"),
    ("search.train.learnig_rate={choice: [1e-4]}", "did you mean 'learning_rate'"),
    ("search.tuning.r={choice: [4, 8]}", "search.tuning.r: the value 4 makes an invalid recipe"),
    ("search.tuning.method={choice: [lora, lorax]}", "'lorax' is not a method"),
])
def test_every_value_of_the_space_makes_a_valid_recipe_before_training(tiny_args, tmp_path, extra, message):
    recipe = load_recipe("quickstart", [*tiny_args, f"output_dir={tmp_path / 's'}", extra])
    with pytest.raises(UserError, match=message):
        plan_search(recipe, 2)
    assert not (tmp_path / "s").exists()


def test_adapter_options_are_drawn_only_for_adapter_trials():
    space = parse_space({"tuning.method": {"choice": ["full", "lora"]}, "tuning.r": {"choice": [4, 8]},
                         "train.learning_rate": {"log_uniform": [1e-5, 1e-3]}})
    full = sample(optuna.trial.FixedTrial({"tuning.method": "full", "train.learning_rate": 1e-4}), space, "full")
    lora = sample(optuna.trial.FixedTrial({"tuning.method": "lora", "tuning.r": 8, "train.learning_rate": 1e-4}),
                  space, "full")
    assert full == {"tuning.method": "full", "train.learning_rate": 1e-4}
    assert lora == {"tuning.method": "lora", "tuning.r": 8, "train.learning_rate": 1e-4}


def test_default_space_follows_the_method():
    assert set(default_space("full", None)) == {"train.learning_rate", "train.warmup_steps"}
    lora = default_space("lora", 1e-4)
    assert lora["tuning.r"] == ("choice", [4, 8, 16, 32]) and lora["train.learning_rate"] == ("log_uniform", [1e-4, 3e-3])


def test_lower_is_better_for_errors_and_losses():
    assert greater_is_better("eval_accuracy") and greater_is_better("pearson")
    assert not greater_is_better("eval_mse") and not greater_is_better("hamming_loss")


# --------------------------------------------------------------------------- cv


def test_cv_trains_a_run_per_fold_and_reports_mean_and_std(tiny_args, tmp_path):
    out = tmp_path / "cv"
    result = runner.invoke(app, ["cv", "--recipe", "quickstart", "--folds", "2", *tiny_args, f"output_dir={out}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "cv.json").read_text())
    assert [row["fold"] for row in summary["folds"]] == [0, 1]
    values = [row["metrics"]["eval_accuracy"] for row in summary["folds"]]
    assert summary["mean"]["eval_accuracy"] == pytest.approx(sum(values) / 2)
    assert summary["std"]["eval_accuracy"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert "test_accuracy" in summary["mean"] and "±" in result.output
    # A fold is a self-contained run: eval on its validation rebuilds the same fold.
    fold = out / "fold-1"
    assert yaml.safe_load((fold / "recipe.yaml").read_text())["data"]["cv_fold"] == 1
    rescored = runner.invoke(app, ["eval", "--run", str(fold)])
    assert rescored.exit_code == 0, rescored.output
    assert json.loads((fold / "eval_metrics.json").read_text())["eval_accuracy"] == pytest.approx(values[1])
    # Rerunning finds every fold finished and trains nothing.
    again = runner.invoke(app, ["cv", "--recipe", "quickstart", "--folds", "2", *tiny_args, f"output_dir={out}"])
    assert again.exit_code == 0 and "finished before" in again.output


def test_folds_are_stratified_disjoint_and_keep_groups_together(tiny_args):
    from datasets import Dataset

    labels = ["a"] * 30 + ["b"] * 12
    ds = Dataset.from_dict({"text": [f"t{i}" for i in range(42)], "label": labels, "doc": [i // 3 for i in range(42)]})
    recipe = load_recipe("quickstart", [*tiny_args, "data.cv_folds=3", "data.cv_fold=0"])
    seen = []
    for fold in range(3):
        data = recipe.data.model_copy(update={"cv_fold": fold})
        train, validation = fold_split(ds, data, seed=42)
        assert len(train) + len(validation) == 42
        assert Counter(validation["label"]) == Counter({"a": 10, "b": 4})  # the label shares of the whole
        seen += validation["text"]
        grouped = data.model_copy(update={"validation_group": "doc"})
        train, validation = fold_split(ds, grouped, seed=42)
        assert not set(train["doc"]) & set(validation["doc"])
    assert sorted(seen) == sorted(ds["text"])  # every example is validated once


def test_cv_bad_input(tiny_args, tmp_path):
    from hf_mha.cv import plan_cv

    recipe = load_recipe("quickstart", [*tiny_args, f"output_dir={tmp_path / 'cv'}"])
    with pytest.raises(UserError, match="--folds must be 2 or more"):
        plan_cv(recipe, 1)
    with pytest.raises(UserError, match="data.cv_fold: 3 is not a fold of 3"):
        load_recipe("quickstart", ["data.cv_folds=3", "data.cv_fold=3"])
    with pytest.raises(UserError, match="data.cv_folds: set by `mha-ft cv`"):
        plan_cv(load_recipe("quickstart", [*tiny_args, "data.cv_folds=3", "data.cv_fold=0"]), 3)
