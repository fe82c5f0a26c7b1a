"""`mha-ft compare`: finished runs side by side, the recipe keys that differ, metrics and cost; --plot."""

import pytest
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, write_jsonl
from hf_mha.compare import compare
from hf_mha.errors import UserError
from hf_mha_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("compare")
    rows = [{"text": t, "label": label} for t, label in INTENT_EXAMPLES]
    files = {"train": write_jsonl(root / "train.jsonl", rows * 2), "validation": write_jsonl(root / "val.jsonl", rows),
             "test": write_jsonl(root / "test.jsonl", rows)}
    for name, lr in (("run-a", "1e-3"), ("run-b", "1e-4")):
        result = runner.invoke(app, ["train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                                     *(f"data.files.{s}={p}" for s, p in files.items()),
                                     f"train.learning_rate={lr}", "train.num_train_epochs=2", "train.use_cpu=true",
                                     f"output_dir={root / name}"])
        assert result.exit_code == 0, result.output
    (root / "not-a-run").mkdir()
    return root


def test_compare_shows_only_differing_keys_and_every_metric(two_runs, tmp_path):
    folders, labels, rows, written = compare([str(two_runs / "run-*")], tmp_path / "cmp.png")
    assert [f.name for f in folders] == ["run-a", "run-b"]
    table = dict(zip(labels, rows))
    assert table["train.learning_rate"] == ["0.0010", "0.0001"]
    assert "model.name" not in table and "output_dir" not in table  # the same in both / always different
    for key in ("eval_accuracy", "test_accuracy", "trainable_params", "train_runtime", "train_samples_per_second"):
        assert key in table and len(table[key]) == 2
    assert written == tmp_path / "cmp.png" and written.stat().st_size > 10_000
    assert (two_runs / "run-a" / "log_history.json").is_file()


def test_compare_through_the_cli_with_a_glob(two_runs):
    result = runner.invoke(app, ["compare", str(two_runs / "*")])  # not-a-run is skipped by the glob
    assert result.exit_code == 0, result.output
    assert "train.learning_rate" in result.output and "eval_accuracy" in result.output


@pytest.mark.parametrize("patterns, message", [
    (["{root}/run-a"], "give two or more finished run folders"),
    (["{root}/run-a", "{root}/not-a-run"], "not-a-run is not a run folder"),
    (["{root}/nothing-*"], "no run folder matches"),
])
def test_compare_refuses_what_is_not_two_runs(two_runs, patterns, message):
    with pytest.raises(UserError, match=message):
        compare([p.format(root=two_runs) for p in patterns])


def test_compare_plot_metric_must_exist(two_runs, tmp_path):
    with pytest.raises(UserError, match="--metric: no run has 'eval_bleu'"):
        compare([str(two_runs / "run-a"), str(two_runs / "run-b")], tmp_path / "x.png", "bleu")
