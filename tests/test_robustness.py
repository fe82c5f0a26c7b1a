"""Runs you can trust: kill + resume equality, Ctrl-C, divergence, incomplete checkpoints, 2-process training.

Kills and interrupts are made deterministic by a small driver script that patches RunGuard to signal its own
process right after a given checkpoint is complete, instead of racing a timer against training.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_mha.env import launch_config_status, launch_configs_dir
from hf_mha.run_folder import COMPLETE_MARKER, complete_checkpoints

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from hf_mha import callbacks
    from hf_mha_cli.main import main

    at_step, sig = int(os.environ["STOP_AT_STEP"]), getattr(signal, os.environ["STOP_SIGNAL"])
    original = callbacks.RunGuard.on_save

    def on_save(self, args, state, control, **kwargs):
        control = original(self, args, state, control, **kwargs)
        if state.global_step == at_step:
            os.kill(os.getpid(), sig)
        return control

    callbacks.RunGuard.on_save = on_save
    sys.argv = ["mha-ft", *sys.argv[1:]]
    main()
    """
)


def _train_args(tiny_model_dir, files, out, *extra):
    return [
        "train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
        *(f"data.files.{s}={p}" for s, p in files.items()),
        "train.num_train_epochs=3", "train.learning_rate=2e-3", "train.per_device_train_batch_size=4",
        "train.save_strategy=steps", "train.save_steps=4", "train.eval_strategy=steps", "train.eval_steps=4",
        "train.use_cpu=true", f"output_dir={out}", *extra,
    ]


def _run(args, env=None, driver=None):
    command = [sys.executable, str(driver), *args] if driver else [sys.executable, "-m", "hf_mha_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture
def files(intent_files):
    return {"train": intent_files["train"], "validation": intent_files["validation"], "test": intent_files["test"]}


@pytest.fixture
def driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, tiny_model_dir, files, driver):
    straight = tmp_path / "straight"
    result = _run(_train_args(tiny_model_dir, files, straight))
    assert result.returncode == 0, result.stderr[-2000:]

    killed = tmp_path / "killed"
    result = _run(_train_args(tiny_model_dir, files, killed), {"STOP_AT_STEP": "8", "STOP_SIGNAL": "SIGKILL"}, driver)
    assert result.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()
    assert [p.name for p in complete_checkpoints(killed)][-1] == "checkpoint-8"
    # A checkpoint cut short by a kill (no marker) must never be picked, even with a higher step.
    partial = killed / "checkpoint-10"
    partial.mkdir()
    (partial / "trainer_state.json").write_text("{")

    result = _run(_train_args(tiny_model_dir, files, killed))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from checkpoint-8" in result.stdout
    resumed, reference = _metrics(killed), _metrics(straight)
    for key in ("eval_loss", "eval_accuracy", "eval_f1_macro"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


def test_ctrl_c_saves_a_checkpoint_and_resumes(tmp_path, tiny_model_dir, files, driver):
    out = tmp_path / "run"
    # SIGINT after checkpoint-4: RunGuard asks for one more checkpoint at the end of step 5 and stops.
    result = _run(_train_args(tiny_model_dir, files, out), {"STOP_AT_STEP": "4", "STOP_SIGNAL": "SIGINT"}, driver)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("stopped: interrupted")
    assert [p.name for p in complete_checkpoints(out)][-1] == "checkpoint-5"
    assert not (out / "metrics.json").exists()
    result = _run(_train_args(tiny_model_dir, files, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from checkpoint-5" in result.stdout
    assert "eval_accuracy" in _metrics(out)


def test_diverged_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_model_dir, files):
    out = tmp_path / "run"
    # A huge learning rate without clipping blows the weights up within a few steps.
    result = _run(_train_args(tiny_model_dir, files, out, "train.learning_rate=1e12", "train.max_grad_norm=0",
                              "train.logging_steps=1", "train.save_steps=1", "train.eval_steps=1",
                              "train.warmup_steps=0"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "training loss became" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "metrics.json").exists()
    import torch
    from safetensors.torch import load_file

    for checkpoint in complete_checkpoints(out):
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), checkpoint


def test_resume_flag_without_checkpoint(tmp_path, tiny_model_dir, files):
    out = tmp_path / "run"
    result = _run(_train_args(tiny_model_dir, files, out, "--resume"))
    assert result.returncode == 2
    assert "no complete checkpoint" in result.stderr


def test_complete_checkpoints_order(tmp_path):
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (10, 2):
        (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("")
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate launcher not on PATH")
def test_two_process_training_counts_each_eval_example_once(tmp_path, tiny_model_dir, intent_files):
    from conftest import INTENT_EXAMPLES, write_jsonl

    # 13 validation rows: not a multiple of 2 processes x batch, so a naive gather would count padding twice.
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    validation = write_jsonl(tmp_path / "validation.jsonl", rows + rows[:1])
    out = tmp_path / "ddp"
    args = _train_args(tiny_model_dir, {**intent_files, "validation": validation}, out,
                       "train.per_device_eval_batch_size=4")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [shutil.which("accelerate"), "launch", "--config_file", str(launch_configs_dir() / "cpu_2proc.yaml"),
         "-m", "hf_mha_cli", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Results") == 1, "only the main process prints"
    trained = _metrics(out)
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 13
    rescored = _run(["eval", "--run", str(out)])
    assert rescored.returncode == 0, rescored.stderr[-2000:]
    single = json.loads((out / "eval_metrics.json").read_text())
    assert trained["eval_accuracy"] == pytest.approx(single["eval_accuracy"], abs=1e-9)
    assert trained["eval_f1_macro"] == pytest.approx(single["eval_f1_macro"], abs=1e-9)


def test_launch_configs_load_and_cpu_one_runs_here():
    status = launch_config_status()
    assert {"cpu_2proc.yaml", "single_gpu.yaml", "multi_gpu.yaml", "fsdp.yaml", "deepspeed_zero2.yaml",
            "multi_node.yaml"} <= set(status)
    assert status["cpu_2proc.yaml"][0] is True
    assert status["multi_node.yaml"] == (False, status["multi_node.yaml"][1]) and "machines" in status["multi_node.yaml"][1]
