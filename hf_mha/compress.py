"""`mha-ft compress`: a smaller, faster model from a finished full fine-tuning run, in stages that are each a
normal run folder under --out:

    layers-N/          a student of N evenly spaced layers of the run, trained from the run's weights
    heads-F/           the previous stage (the run itself without --layers) with a fraction F of its heads pruned,
                       least important first (head importance on validation); not trained
    heads-F-trained/   that pruned model trained again to win back what the cut cost

With --distill every trained stage also learns the run's soft targets (`distill.teacher` = the run). Layers go
first: a pruned model keeps per-layer head counts that dropping layers would have to renumber. The stages train
with the run's recipe (its data and training arguments) and the overrides given, e.g. train.num_train_epochs=1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .console import say
from .errors import UserError
from .recipe import Recipe, apply_overrides, recipe_from_dict
from .run_folder import check_new_folder, load_run
from .tuning import adapter_family


@dataclass
class Stage:
    name: str
    folder: Path
    recipe: Recipe | None  # what trains it; None for the pruned copy, which is cut, not trained


def plan_compress(run: Path, out: Path, heads: float | None, layers: int | None, distill: bool,
                  overrides: list[str] | None = None) -> list[Stage]:
    """The stages and their recipes, every value checked, before a model loads."""
    from .models import kept_layers, load_config

    if heads is None and layers is None:
        raise UserError("compress: nothing to do; add --layers N (a shallower student), --heads F (prune a fraction "
                        "of the heads), or both")
    if heads is not None and not 0 < heads < 1:
        raise UserError(f"--heads must be a fraction of the heads in (0, 1), e.g. 0.5; got {heads}")
    base = load_run(run)
    if adapter_family(run) is not None:
        raise UserError(f"--run: {run} holds an adapter; compress works on a full fine-tuning run's weights: export "
                        "it (mha-ft export) and fine-tune the export with tuning.method full first")
    check_new_folder(out, "--out", "choose a new folder for the compressed runs")
    stages, source = [], Path(run).resolve()
    if layers is not None:
        student = _stage_recipe(base, source, out / f"layers-{layers}", run, distill, overrides, num_layers=layers)
        kept_layers(student, load_config(student))
        stages.append(Stage(f"layers-{layers}", out / f"layers-{layers}", student))
        source = (out / f"layers-{layers}").resolve()
    if heads is not None:
        pruned = out / f"heads-{heads:g}"
        stages.append(Stage(pruned.name, pruned, None))
        trained = _stage_recipe(base, pruned.resolve(), out / f"{pruned.name}-trained", run, distill, overrides)
        stages.append(Stage(f"{pruned.name}-trained", out / f"{pruned.name}-trained", trained))
    return stages


def _stage_recipe(base: Recipe, source: Path, folder: Path, teacher: Path, distill: bool, overrides: list[str] | None,
                  num_layers: int | None = None) -> Recipe:
    tree = base.model_dump(mode="json", exclude={"source"})
    tree["model"] |= {"name": str(source), "num_layers": num_layers, "keep_layers": None}
    tree["distill"] = {**tree.get("distill", {}), "teacher": str(Path(teacher).resolve()) if distill else None}
    tree["output_dir"] = str(folder.resolve())
    return recipe_from_dict(apply_overrides(tree, overrides or []), base.source)


def run_compress(run: Path, stages: list[Stage], heads: float | None, console=None) -> list[Path]:
    """Train, prune and train again as planned; returns the run and every stage folder that has metrics."""
    from .heads import importance, load_heads_model, prune_run
    from .training import train

    source, done = Path(run), [Path(run)]
    for stage in stages:
        if stage.recipe is None:  # the cut: head importance on the previous stage, then a pruned copy
            saved = load_heads_model(source)
            scores = importance(saved).scores
            metrics = prune_run(saved, scores, heads, stage.folder, source)
            say(console, f"[bold]{stage.name}[/]: pruned {metrics['heads_pruned']} of {metrics['heads_before']} heads "
                         f"({metrics['params_before']:,} -> {metrics['total_params']:,} parameters) · {stage.folder}")
            continue
        say(console, f"[bold]{stage.name}[/]: training{' with the run as teacher' if stage.recipe.distill.teacher else ''}"
                     f" · {stage.folder}")
        train(stage.recipe, console=None)
        source = stage.folder
        done.append(stage.folder)
    return done
