"""The run folder: what marks it as ours, finished or resumable, who may write it, and where commands may write.

    .lock                  while a process trains into it: that process's pid and host
    recipe.yaml            the resolved recipe (written first): the folder is an mha-ft run
    checkpoint-*/          while training; `.complete` inside once the Trainer has written all of it
    metrics.json           written last: its presence marks a finished run
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import yaml

from .console import warn
from .errors import UserError, echo
from .fsutil import can_write_in, nearest_existing
from .recipe import Recipe, load_recipe

RECIPE_FILE = "recipe.yaml"
FINISHED_MARKER = "metrics.json"
#: The Trainer's log history (losses and metrics per logging step), for `mha-ft compare --plot`.
LOG_HISTORY_FILE = "log_history.json"
COMPLETE_MARKER = ".complete"
LOCK_FILE = ".lock"
#: Train keys that may change between the killed run and its resume: how long to train, and how to log.
RESUMABLE_TRAIN_KEYS = ("num_train_epochs", "max_steps", "logging_steps", "logging_strategy", "logging_first_step",
                        "logging_dir", "report_to", "run_name", "disable_tqdm")
#: The recipe sections whose every key shapes the result (output_dir and keep_checkpoints do not).
RESULT_SECTIONS = ("task", "model.", "data.", "tuning.", "train.", "eval.")
#: Recipe keys a run fills in itself (saved in its recipe.yaml), which a resuming recipe may leave unset.
RECORDED_BY_THE_RUN = ("data.version_2_with_negative",)


#: Flat metrics of a split that are costs or bookkeeping (metrics.json's eval_runtime, ...), not scores.
NOT_SCORES = ("_runtime", "_samples_per_second", "_steps_per_second", "_epoch")


def run_metrics(run: str | Path) -> dict:
    """A finished run's flat metrics (its metrics.json)."""
    return json.loads((Path(run) / FINISHED_MARKER).read_text(encoding="utf-8"))


def scores_of(metrics: dict, with_loss: bool = True) -> dict[str, float]:
    """The validation (eval_) and test scores in a run's flat metrics, the loss too unless `with_loss` is False."""
    skip = NOT_SCORES if with_loss else (*NOT_SCORES, "_loss")
    return {key: value for key, value in metrics.items() if key.startswith(("eval_", "test_"))
            and not key.endswith(skip) and isinstance(value, (int, float)) and not isinstance(value, bool)}


def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoints the Trainer finished writing, oldest first."""
    found = [p for p in Path(out).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    found = [p for p in found if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


NEW, RESUME, REPLACE = "new", "resume", "replace"


def output_dir_plan(out: Path, overwrite: bool) -> str:
    """What training into `out` will do: NEW (absent or empty), RESUME (an unfinished run of ours) or REPLACE
    (with --overwrite). Refuses a file, a folder that is not an mha-ft run, a finished run without --overwrite,
    and a place it cannot write. Looks only: `clear_output_dir` does the replacing."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} is a file; choose a folder: output_dir=PATH")
    ancestor = nearest_existing(out)
    if not can_write_in(ancestor):
        raise UserError(f"output_dir {out}: cannot write in {ancestor} (permission denied); choose another output_dir=PATH")
    if not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_FILE]:
        return NEW
    if not (out / RECIPE_FILE).is_file():
        raise UserError(f"output_dir {out} exists and is not an mha-ft run folder; choose another output_dir=PATH")
    if overwrite:
        return REPLACE
    if (out / FINISHED_MARKER).is_file():
        raise UserError(
            f"output_dir {out} already holds a finished run; choose another output_dir=PATH or pass --overwrite"
        )
    return RESUME


def clear_output_dir(out: Path) -> None:
    """Remove what `out` holds, but the lock of the run about to write it."""
    for path in out.iterdir():
        if path.name != LOCK_FILE:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def check_free_space(out: Path, needed: int, what: str) -> None:
    """Refuse to start when the disk holding `out` has less free space than `needed` bytes for `what`."""
    free = shutil.disk_usage(nearest_existing(out)).free
    if free < needed:
        raise UserError(
            f"output_dir {out}: {size_text(free)} free, but {what} needs about {size_text(needed)}; free some space or "
            "choose another output_dir=PATH"
        )


def size_text(count: int) -> str:
    """Bytes as a person reads them: 1.2 GB, 340 MB, 0.4 MB."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GB"
    return f"{count / 2**20:,.0f} MB" if count >= 10 * 2**20 else f"{count / 2**20:.1f} MB"


def check_same_recipe(out: Path, recipe: Recipe) -> None:
    """Resuming continues the saved run: refuse a recipe that differs from it in anything that changes the result
    (all but `RESUMABLE_TRAIN_KEYS` and what the run records itself)."""
    saved = flat_keys(yaml.safe_load((out / RECIPE_FILE).read_text(encoding="utf-8")) or {})
    given = flat_keys(recipe.model_dump(mode="json", exclude={"source"}))
    differing = []
    for key in sorted(set(saved) | set(given)):
        mine, theirs = given.get(key), saved.get(key)
        if mine == theirs or not key.startswith(RESULT_SECTIONS) or _resumable(key):
            continue
        if key in RECORDED_BY_THE_RUN and mine is None:
            continue
        differing.append(f"{key} ({echo(theirs, 60)} in the run, {echo(mine, 60)} now)")
    if differing:
        raise UserError(
            f"output_dir {out} holds an unfinished run of another recipe: {'; '.join(differing[:5])}"
            f"{f' and {len(differing) - 5} more' if len(differing) > 5 else ''}. Resume it as it was "
            f"(mha-ft train --recipe {out / RECIPE_FILE}), start over with --overwrite, or choose another "
            "output_dir=PATH"
        )


def check_study_folder(out: Path, marker: str, recipe: Recipe, overwrite: bool, verb: str) -> None:
    """The folder of a command that trains many runs (`search`, `cv`): new, or one this verb started with the same
    recipe (`marker` holds it), which the command continues; --overwrite starts it over. Never a run or a folder
    of someone else's files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} is a file; choose a folder for the {verb}: output_dir=PATH")
    if not out.is_dir() or not [p for p in out.iterdir() if p.name != LOCK_FILE]:
        return
    if not (out / marker).is_file():
        what = "a run" if (out / RECIPE_FILE).is_file() else f"files that are not an mha-ft {verb}"
        raise UserError(f"output_dir {out} holds {what}; choose a new folder for the {verb}: output_dir=PATH")
    if overwrite:
        return
    saved = flat_keys(yaml.safe_load((out / marker).read_text(encoding="utf-8")) or {})
    given = flat_keys(recipe.model_dump(mode="json", exclude={"source"}))
    differing = [f"{key} ({echo(saved.get(key), 60)} in it, {echo(given.get(key), 60)} now)"
                 for key in sorted(set(saved) | set(given)) if saved.get(key) != given.get(key)]
    if differing:
        raise UserError(f"output_dir {out} holds a {verb} of another recipe: {'; '.join(differing[:4])}. Continue it "
                        f"with mha-ft {verb} --recipe {out / marker}, start over with --overwrite, or choose another "
                        "output_dir=PATH")


def _resumable(key: str) -> bool:
    section, _, name = key.partition(".")
    return section == "train" and name.split(".")[0] in RESUMABLE_TRAIN_KEYS


def flat_keys(tree: dict, prefix: str = "") -> dict[str, object]:
    """A nested recipe as {dotted.key: value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= flat_keys(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_new_folder(out: Path, option: str, why: str) -> None:
    """`out` must not exist yet, or be an empty folder: `option` writes a new folder there and never overwrites."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{option}: {out} exists and is not empty; {why}")


def resume_point(out: Path, found_unfinished: bool, resume: bool | None, say) -> str | None:
    """The last complete checkpoint when resuming (asked for, or an unfinished run found); else None."""
    if resume is False or not (found_unfinished or resume):
        return None
    checkpoints = complete_checkpoints(out)
    if not checkpoints:
        if resume:
            raise UserError(f"--resume: no complete checkpoint in {out} to resume from; drop --resume to start fresh")
        say(f"{out} holds an unfinished run with no complete checkpoint: starting from the beginning")
        return None
    say(f"Resuming the unfinished run in {out} from {checkpoints[-1].name}")
    return str(checkpoints[-1])


def check_finished_run(run: Path, option: str = "--run") -> None:
    """`run` is the folder of a finished training run (the option that named it leads the message)."""
    if not (run / RECIPE_FILE).is_file():
        raise UserError(f"{option}: {run} is not a run folder (no {RECIPE_FILE}); give the output_dir of a training run")
    if not (run / FINISHED_MARKER).is_file():
        raise UserError(f"{option}: {run} has not finished training (no {FINISHED_MARKER}); resume it with mha-ft train")


def load_run(run_dir: str | Path) -> Recipe:
    """The recipe of a finished run folder."""
    run = Path(run_dir)
    check_finished_run(run)
    return load_recipe(str(run / RECIPE_FILE))


class RunLock:
    """One writer per run folder: `<out>/.lock` holds the writer's pid and host while it trains.

    Taken with O_EXCL, so of two processes starting together exactly one gets it. A lock whose pid is no longer
    running on this host is stale (its process was killed) and is taken over with a note. On release the lock
    goes, and so does the folder if taking the lock created it and nothing was written since (a run refused by
    a later check leaves no trace).
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LOCK_FILE
        self.created_folder = False

    def __enter__(self) -> "RunLock":
        self.created_folder = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # the other writer released it between our two looks
                    continue
                if _held_by_someone_else(*holder[:2]):
                    raise self._busy(*holder)
                warn(f"{self.out}: taking over the lock of process {holder[0]}, which is no longer running")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as lock:
                lock.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            return self

    def check(self) -> None:
        """Refuse, as taking the lock would, when a live process holds it; take nothing."""
        holder = self._holder() if self.path.is_file() else None
        if holder is not None and _held_by_someone_else(*holder[:2]):
            raise self._busy(*holder)

    def _busy(self, pid: int, host: str, since: str) -> UserError:
        return UserError(
            f"output_dir {self.out} is being written by process {pid} on {host} (since {since}); wait for it to "
            f"finish or choose another output_dir=PATH (if that process is gone, delete {self.path})"
        )

    def _holder(self) -> tuple[int, str, str] | None:
        try:
            found = json.loads(self.path.read_text())
            return int(found["pid"]), str(found["host"]), str(found.get("since", "?"))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # cut short while being written: treat as held by nobody alive
            return -1, socket.gethostname(), "?"

    def __exit__(self, *exc_info) -> None:
        self.path.unlink(missing_ok=True)
        if self.created_folder and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()


def _held_by_someone_else(pid: int, host: str) -> bool:
    """A lock of another host cannot be checked from here, so it counts as held."""
    return host != socket.gethostname() or _running(pid)


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
