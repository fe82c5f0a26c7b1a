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
import time
from pathlib import Path

import pytest

from hf_mha.env import launch_config_status, launch_configs_dir
from hf_mha.run_folder import COMPLETE_MARKER, LOCK_FILE, complete_checkpoints

DRIVER = textwrap.dedent(
    """
    import errno, os, signal, sys, time
    from pathlib import Path
    import torch
    from hf_mha import callbacks
    from hf_mha_cli.main import main

    at_step, mode = int(os.environ["STOP_AT_STEP"]), os.environ["STOP_SIGNAL"]
    original = callbacks.RunGuard.on_save

    def on_save(self, args, state, control, **kwargs):
        control = original(self, args, state, control, **kwargs)
        if state.global_step == at_step and mode == "PAUSE":  # hold the run (and its lock) until told to go on
            Path(os.environ["PAUSED_FLAG"]).write_text(str(os.getpid()))
            while not Path(os.environ["GO_FLAG"]).exists():
                time.sleep(0.1)
        elif state.global_step == at_step:
            os.kill(os.getpid(), getattr(signal, mode))
        return control

    def save(obj, f, *args, **kwargs):  # ENOSPC: the disk fills while checkpoint-<STOP_AT_STEP> is written
        if f"checkpoint-{at_step}" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return original_save(obj, f, *args, **kwargs)

    callbacks.RunGuard.on_save = on_save
    if mode == "ENOSPC":
        original_save, torch.save = torch.save, save
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


def _run(args, env=None, driver=None, cwd=None):
    command = [sys.executable, str(driver), *args] if driver else [sys.executable, "-m", "hf_mha_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
                          cwd=cwd)


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

    assert (killed / LOCK_FILE).is_file(), "a killed run leaves its lock behind"

    result = _run(_train_args(tiny_model_dir, files, killed))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from checkpoint-8" in result.stdout
    assert "taking over the lock of process" in result.stderr, "the dead run's lock is stale"
    assert not (killed / LOCK_FILE).exists()
    resumed, reference = _metrics(killed), _metrics(straight)
    assert set(resumed) == set(reference)
    # Every key equal (train_loss too: the whole run's, not the steps after the resume), but the clock's.
    timing = {k for k in reference if k.endswith(("_runtime", "_per_second"))}
    assert {"train_runtime", "train_loss", "eval_loss"} <= set(reference) and "train_loss" not in timing
    for key in sorted(set(reference) - timing):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-6), key
    assert all(resumed[key] > 0 for key in timing)


def test_a_second_train_into_a_folder_being_written_exits_at_once(tmp_path, tiny_model_dir, files, driver):
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    command = [sys.executable, str(driver), *_train_args(tiny_model_dir, files, out)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={
        **os.environ, "STOP_AT_STEP": "4", "STOP_SIGNAL": "PAUSE", "PAUSED_FLAG": str(paused), "GO_FLAG": str(go)})
    try:
        deadline = time.time() + 300
        while not paused.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert paused.exists(), first.communicate()[1][-2000:]
        second = _run(_train_args(tiny_model_dir, files, out))
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"is being written by process {first.pid}" in second.stderr
        assert "Resuming" not in second.stdout and "trainable parameters" not in second.stdout
        also = _run(["validate", "--recipe", str(out / "recipe.yaml")])
        assert also.returncode == 2 and f"process {first.pid}" in also.stderr
    finally:
        go.write_text("")
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    assert "eval_accuracy" in _metrics(out)
    assert not (out / LOCK_FILE).exists()


def test_a_full_disk_keeps_the_last_complete_checkpoint_and_resumes(tmp_path, tiny_model_dir, files, driver):
    out = tmp_path / "run"
    result = _run(_train_args(tiny_model_dir, files, out), {"STOP_AT_STEP": "8", "STOP_SIGNAL": "ENOSPC"}, driver)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: could not write to") and "No space left on device" in last, last
    assert "are free" in last and "the last complete checkpoint is checkpoint-4" in last, last
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"], "the partial checkpoint is removed"
    assert not (out / LOCK_FILE).exists()
    result = _run(_train_args(tiny_model_dir, files, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from checkpoint-4" in result.stdout


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
    assert "loss became" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "metrics.json").exists()
    import torch
    from safetensors.torch import load_file

    for checkpoint in complete_checkpoints(out):
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), checkpoint


def test_a_non_finite_evaluation_stops_training_and_saves_nothing():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hf_mha.callbacks import RunGuard

    guard, state = RunGuard(), TrainerState(global_step=8)
    control = TrainerControl(should_save=True)
    guard.on_evaluate(TrainingArguments(output_dir="unused", report_to="none"), state, control,
                      metrics={"eval_loss": float("nan")})
    assert control.should_training_stop and not control.should_save, "the diverged weights must not be saved"
    assert guard.diverged_at[0] == 8 and guard.diverged_at[2] == "evaluation"
    finite = TrainerControl(should_save=True)
    RunGuard().on_evaluate(None, state, finite, metrics={"eval_loss": 0.7})
    assert finite.should_save and not finite.should_training_stop


def test_too_little_free_space_is_refused_before_training(tmp_path, tiny_model_dir, files, monkeypatch):
    from hf_mha import run_folder
    from hf_mha.errors import UserError
    from hf_mha.recipe import load_recipe
    from hf_mha.training import validate

    recipe = load_recipe("quickstart", _train_args(tiny_model_dir, files, tmp_path / "out")[3:])
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage._replace(free=1024))
    with pytest.raises(UserError, match=r"0\.0 MB free, but a checkpoint and the final model needs about"):
        validate(recipe)
    assert not (tmp_path / "out").exists(), "nothing written before the check"


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
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rescored = _run(["eval", "--run", os.path.relpath(out, elsewhere)], cwd=elsewhere)  # one process, another folder
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
