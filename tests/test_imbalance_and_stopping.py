"""Skewed labels and knowing when to stop: class-weighted and focal losses through the Trainer's
compute_loss_func, and early stopping through transformers' EarlyStoppingCallback."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, write_jsonl
from hf_mha.errors import UserError
from hf_mha.losses import class_weights, loss_function
from hf_mha.recipe import load_recipe
from hf_mha.tasks import Labels
from hf_mha_cli.main import app

runner = CliRunner()
NAMES = ["neg", "pos"]


def recipe_with(*train: str):
    return load_recipe("quickstart", list(train))


def test_balanced_weights_average_one_over_the_examples():
    ids = [0] * 9 + [1]
    weights = class_weights(recipe_with("train.class_weights=balanced"), Labels(NAMES), ids)
    assert weights.tolist() == pytest.approx([10 / (2 * 9), 10 / 2])
    assert sum(weights[i] for i in ids) == pytest.approx(len(ids))


def test_named_weights_and_the_others_one():
    weights = class_weights(recipe_with("train.class_weights={pos: 4}"), Labels(NAMES), [0, 1])
    assert weights.tolist() == [1.0, 4.0]


def test_weighted_loss_is_weighted_cross_entropy_over_the_items():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    compute = loss_function(recipe_with("train.class_weights={pos: 3}"), Labels(NAMES), target.tolist())
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]), reduction="sum") / 6
    assert compute({"logits": logits}, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # over an accumulated batch the Trainer passes the item count of all its micro-batches
    assert compute({"logits": logits}, target, num_items_in_batch=12).item() == pytest.approx(expected.item() / 2, rel=1e-6)


def test_focal_loss_down_weights_easy_examples_and_ignores_padding():
    logits = torch.tensor([[4.0, -4.0], [0.1, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1, -100])
    ce = loss_function(recipe_with("train.class_weights={neg: 1}"), Labels(NAMES), [0, 1])
    focal0 = loss_function(recipe_with("train.loss=focal", "train.focal_gamma=0"), Labels(NAMES), [0, 1])
    focal2 = loss_function(recipe_with("train.loss=focal"), Labels(NAMES), [0, 1])
    assert focal0({"logits": logits}, target).item() == pytest.approx(ce({"logits": logits}, target).item())
    per_item = F.cross_entropy(logits[:2], target[:2], reduction="none")
    p_true = torch.exp(-per_item)
    expected = ((1 - p_true) ** 2 * per_item).sum() / 2
    assert focal2({"logits": logits}, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_multi_label_balanced_is_pos_weight():
    labels = Labels(["a", "b"], "multi_label_classification")
    rows = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    recipe = recipe_with("train.class_weights=balanced")
    assert class_weights(recipe, labels, rows).tolist() == pytest.approx([1 / 3, 3.0])
    logits, target = torch.randn(4, 2), torch.tensor(rows)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor([1 / 3, 3.0]))
    assert loss_function(recipe, labels, rows)({"logits": logits}, target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("override, message", [
    ("train.class_weights={greeting: 2}", "train.class_weights: 'greeting' is not a label"),
    ("train.class_weights={refund: -1}", "the weight of 'refund' must be a number > 0"),
    ("train.loss=dice", "train.loss: Input should be 'cross_entropy' or 'focal'"),
    ("train.early_stopping_patience=0", "train.early_stopping_patience: Input should be greater than or equal to 1"),
])
def test_bad_loss_and_stopping_options_are_one_line(override, message, tiny_model_dir, intent_files, tmp_path):
    result = runner.invoke(app, ["validate", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                                 *(f"data.files.{s}={p}" for s, p in intent_files.items()), override,
                                 f"output_dir={tmp_path / 'run'}"])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception)


def test_early_stopping_needs_evaluation(tiny_model_dir, intent_files, tmp_path):
    result = runner.invoke(app, ["validate", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
                                 *(f"data.files.{s}={p}" for s, p in intent_files.items()),
                                 "train.early_stopping_patience=1", "train.eval_strategy=no", "train.save_strategy=no",
                                 f"output_dir={tmp_path / 'run'}"])
    assert isinstance(result.exception, UserError) and "needs evaluation" in str(result.exception)


def quickstart_train(model, files, out, *extra):
    return runner.invoke(app, ["train", "--recipe", "quickstart", f"model.name={model}",
                               *(f"data.files.{s}={p}" for s, p in files.items()), "train.use_cpu=true",
                               f"output_dir={out}", *extra])


def test_early_stopping_stops_before_the_last_epoch(tiny_model_dir, intent_files, tmp_path):
    # A learning rate too small to change any prediction: validation never improves after epoch 1.
    out = tmp_path / "run"
    result = quickstart_train(tiny_model_dir, intent_files, out, "train.num_train_epochs=6", "train.learning_rate=1e-12",
                              "train.early_stopping_patience=1", "train.per_device_train_batch_size=8")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "early_stopping.json").read_text())
    steps_per_epoch = len(INTENT_EXAMPLES) * 2 // 8
    assert record["stopped_early"] is True and record["stopped_at_epoch"] == 2
    assert record["stopped_at_step"] == 2 * steps_per_epoch < record["planned_steps"] == 6 * steps_per_epoch
    assert record["best_checkpoint"] == f"checkpoint-{steps_per_epoch}"
    assert "Early stopping: stopped early at epoch 2" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(record["best_metric"])


def test_weighted_focal_training_runs_for_text_and_tokens(tiny_model_dir, intent_files, tmp_path):
    rows = [{"text": t, "label": label} for t, label in INTENT_EXAMPLES]
    skewed = write_jsonl(tmp_path / "skewed.jsonl", [r for r in rows if r["label"] != "refund"] * 4 + rows)
    files = intent_files | {"train": skewed}
    result = quickstart_train(tiny_model_dir, files, tmp_path / "run", "train.max_steps=3",
                              "train.class_weights=balanced", "train.loss=focal")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_loss"] > 0


def test_token_labels_weigh_words_not_padding():
    weights = class_weights(recipe_with("train.class_weights=balanced"), Labels(NAMES), [[0, -100, 1], [0, 0, -100]])
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / 2])


def test_an_unquoted_no_in_yaml_is_the_string_no():
    recipe = recipe_with("train.eval_strategy=no", "train.save_strategy=no")  # YAML 1.1 reads `no` as false
    assert recipe.train["eval_strategy"] == "no" and recipe.train["save_strategy"] == "no"


def test_a_resumed_run_keeps_counting_evaluations_without_improvement(tiny_model_dir, intent_files, tmp_path):
    """Patience 2, no improvement after epoch 1: an uninterrupted run stops at epoch 3. Killed after epoch 2 and
    resumed, it must stop at epoch 3 too (the counter, 1 at epoch 2, comes back from the checkpoint), not at 4."""
    import shutil

    out = tmp_path / "run"
    extra = ("train.num_train_epochs=6", "train.learning_rate=1e-12", "train.early_stopping_patience=2",
             "train.per_device_train_batch_size=8", "train.save_total_limit=null", "keep_checkpoints=true")
    assert quickstart_train(tiny_model_dir, intent_files, out, *extra).exit_code == 0
    steps = len(INTENT_EXAMPLES) * 2 // 8
    assert json.loads((out / "early_stopping.json").read_text())["stopped_at_epoch"] == 3
    # The folder as a kill after epoch 2 leaves it: checkpoints up to epoch 2, no final files.
    shutil.rmtree(out / f"checkpoint-{3 * steps}")
    for name in ("metrics.json", "early_stopping.json"):
        (out / name).unlink()
    result = quickstart_train(tiny_model_dir, intent_files, out, *extra, "--resume")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "early_stopping.json").read_text())
    assert record["stopped_at_epoch"] == 3 and record["best_checkpoint"] == f"checkpoint-{steps}"
