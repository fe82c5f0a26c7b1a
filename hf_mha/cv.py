"""`mha-ft cv`: k-fold cross-validation of a recipe on its training data.

Fold i of k is a normal run whose recipe says `data.cv_folds: k, data.cv_fold: i`: the data module cuts train
into k seeded folds (stratified by label, whole `data.validation_group` groups together) and validates on fold i,
so each fold folder is self-contained (`eval --run` rebuilds the same fold). The data's own validation split is
not used; a test split is scored by every fold. The cv folder (the recipe's output_dir):

    cv.yaml         the recipe and fold count (written first: the folder is a cv); rerunning continues it
    fold-I/         one run folder per fold
    cv.json         every fold's scores, their mean and standard deviation (sample, ddof 1)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from . import fsutil
from .console import say
from .data_report import check_data
from .errors import RunStopped, UserError
from .recipe import Recipe, recipe_from_dict
from .run_folder import FINISHED_MARKER, RunLock, check_study_folder, clear_output_dir, run_metrics, scores_of

CV_RECIPE = "cv.yaml"
RESULTS = "cv.json"


@dataclass
class CvPlan:
    recipe: Recipe  # as given, output_dir the cv folder
    folds: list[Recipe]
    out: Path

    def marked(self) -> Recipe:
        """The recipe with its fold count (cv.yaml): what a continued cv must match."""
        return self.recipe.model_copy(update={"data": self.recipe.data.model_copy(update={"cv_folds": len(self.folds)})})


def plan_cv(recipe: Recipe, folds: int, overwrite: bool = False) -> CvPlan:
    """The fold recipes, checked, and the folder: before any data or model is loaded."""
    if folds < 2:
        raise UserError(f"--folds must be 2 or more, got {folds}")
    if recipe.data.cv_folds is not None:
        raise UserError("data.cv_folds: set by `mha-ft cv` for each fold; remove it from the recipe (and data.cv_fold)")
    if str(recipe.train.get("eval_strategy", "epoch")) == "no":
        raise UserError("cv: each fold is scored on its held-out part; remove train.eval_strategy=no")
    out = Path(recipe.output_dir)
    plan = CvPlan(recipe, [fold_recipe(recipe, folds, i) for i in range(folds)], out)
    check_study_folder(out, CV_RECIPE, plan.marked(), overwrite, "cv")
    check_data(plan.folds[0])  # files, columns, labels, and folds the data can fill
    return plan


def fold_recipe(recipe: Recipe, folds: int, fold: int) -> Recipe:
    tree = recipe.model_dump(mode="json", exclude={"source"})
    tree["data"] |= {"cv_folds": folds, "cv_fold": fold}
    if tree["data"].get("files"):
        tree["data"]["files"]["validation"] = None  # the fold is validation: no need to read the file
    tree["output_dir"] = str(Path(recipe.output_dir) / f"fold-{fold}")
    return recipe_from_dict(tree, recipe.source)


def run_cv(plan: CvPlan, overwrite: bool = False, console=None) -> dict:
    """Train every fold not yet finished (an unfinished one resumes from its checkpoint); write and return cv.json."""
    from .training import train

    with RunLock(plan.out):
        if overwrite:
            clear_output_dir(plan.out)
        if not (plan.out / CV_RECIPE).is_file():
            fsutil.write_text(plan.out / CV_RECIPE, plan.marked().to_yaml())
        results = []
        for i, recipe in enumerate(plan.folds):
            run = Path(recipe.output_dir)
            if (run / FINISHED_MARKER).is_file():
                say(console, f"fold {i} of {len(plan.folds)}: finished before, {run}")
                metrics = run_metrics(run)
            else:
                say(console, f"[bold]fold {i}[/] of {len(plan.folds)} · {run}")
                try:
                    metrics = train(recipe, console=None)
                except RunStopped as exc:
                    raise RunStopped(f"fold {i}: {exc}", exc.exit_code) from None
            results.append({"fold": i, "run": str(run), "metrics": scores_of(metrics)})
        summary = {"folds": results, **summarize([row["metrics"] for row in results])}
        fsutil.write_json(plan.out / RESULTS, summary)
    return summary


def summarize(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each score the folds share."""
    keys = [key for key in per_fold[0] if all(key in fold for fold in per_fold)]
    return {
        "mean": {key: statistics.fmean(fold[key] for fold in per_fold) for key in keys},
        "std": {key: statistics.stdev(fold[key] for fold in per_fold) for key in keys},
    }
