"""`mha-ft compress`: layers dropped, heads pruned and trained again (distilled from the run), each stage a run
folder, and the accuracy/speed frontier printed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import intent_overrides
from hf_mha.compress import plan_compress
from hf_mha.errors import UserError
from hf_mha_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("compress")
    data = intent_overrides(root)
    result = runner.invoke(app, ["train", "--recipe", "quickstart", f"model.name={tiny_model_dir}", *data,
                                 "train.max_steps=6", "train.use_cpu=true", "data.max_length=32", f"output_dir={root / 'run'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root / "run"


def test_compress_drops_layers_prunes_heads_distils_and_prints_the_frontier(base_run, tmp_path):
    out = tmp_path / "small"
    result = runner.invoke(app, ["compress", "--run", str(base_run), "--layers", "1", "--heads", "0.5", "--distill",
                                 "--out", str(out), "train.max_steps=3"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["heads-0.5", "heads-0.5-trained", "layers-1"]
    layers = json.loads((out / "layers-1" / "config.json").read_text())
    assert layers["num_hidden_layers"] == 1
    pruned = json.loads((out / "heads-0.5-trained" / "config.json").read_text())
    assert pruned["num_hidden_layers"] == 1 and sum(map(len, pruned["hf_mha_pruned_heads"].values())) == 2  # 2 of 4
    for stage in ("layers-1", "heads-0.5-trained"):
        recipe = (out / stage / "recipe.yaml").read_text()
        assert f"teacher: {base_run.resolve()}" in recipe and "max_steps: 3" in recipe
        assert "test_accuracy" in json.loads((out / stage / "metrics.json").read_text())
    text = " ".join(result.output.split())
    assert "Accuracy against speed" in text and "predict speed-up" in text and "test_accuracy" in text


def test_compress_bad_input(base_run, tmp_path):
    with pytest.raises(UserError, match="nothing to do"):
        plan_compress(base_run, tmp_path / "a", None, None, False)
    with pytest.raises(UserError, match="--heads must be a fraction"):
        plan_compress(base_run, tmp_path / "a", 1.5, None, False)
    with pytest.raises(UserError, match="model.num_layers: 5 is more than the 2 layers"):
        plan_compress(base_run, tmp_path / "a", None, 5, False)
    with pytest.raises(UserError, match="--out: .* exists and is not empty"):
        plan_compress(base_run, base_run, 0.5, None, False)
    assert not (tmp_path / "a").exists()
