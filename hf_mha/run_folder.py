"""The run folder: what marks it as ours, finished or resumable, and which folders a command may write.

    recipe.yaml            the resolved recipe (written first): the folder is an mha-ft run
    checkpoint-*/          while training; `.complete` inside once the Trainer has written all of it
    metrics.json           written last: its presence marks a finished run
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import UserError
from .recipe import Recipe, load_recipe

RECIPE_FILE = "recipe.yaml"
FINISHED_MARKER = "metrics.json"
COMPLETE_MARKER = ".complete"


def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoints the Trainer finished writing, oldest first."""
    found = [p for p in Path(out).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    found = [p for p in found if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def check_output_dir(out: Path, overwrite: bool) -> bool:
    """Return True when `out` holds an unfinished run of ours (to resume). Refuse to clobber anything else."""
    if not out.exists() or not any(out.iterdir()):
        return False
    ours = (out / RECIPE_FILE).is_file()
    if not ours:
        raise UserError(f"output_dir {out} exists and is not an mha-ft run folder; choose another output_dir=PATH")
    if (out / FINISHED_MARKER).is_file():
        if not overwrite:
            raise UserError(
                f"output_dir {out} already holds a finished run; choose another output_dir=PATH or pass --overwrite"
            )
        shutil.rmtree(out)
        return False
    if overwrite:
        shutil.rmtree(out)
        return False
    return True


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


def load_run(run_dir: str | Path) -> Recipe:
    """The recipe of a finished run folder."""
    run = Path(run_dir)
    recipe_file = run / RECIPE_FILE
    if not recipe_file.is_file():
        raise UserError(f"--run: {run} is not a run folder (no {RECIPE_FILE}); give the output_dir of a training run")
    if not (run / FINISHED_MARKER).is_file():
        raise UserError(f"--run: {run} has not finished training (no {FINISHED_MARKER}); resume it with mha-ft train")
    return load_recipe(str(recipe_file))
