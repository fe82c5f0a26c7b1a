"""`mha-ft search`: hyperparameter search over a recipe's `search:` space with Optuna (TPE, median pruning).

Optuna directly rather than `Trainer.hyperparameter_search`: that one re-creates the model per trial inside one
Trainer and writes trials as `run-N` checkpoints folders, while here every trial is a normal `mha-ft train` run
(its own folder, recipe.yaml, reports; `eval`, `predict`, `export` and `compare` work on it), and a killed search
picks its killed trial up from that run's last checkpoint. The search folder (the recipe's output_dir):

    search.yaml        the recipe searched, with its space (written first: the folder is a search)
    search.db          the Optuna study (SQLite): rerunning the same command continues it
    search.jsonl       one line per trial: number, state, values, metric, seconds, run folder
    best_recipe.yaml   the best trial's resolved recipe, output_dir <folder>/best: train it as it is
    trials/trial-NNN/  one run folder per trial

The study maximises; a metric where lower is better (mse, hamming_loss) is negated for Optuna and shown as is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from . import fsutil
from .console import say
from .data_report import check_data
from .errors import RunStopped, UserError, echo
from .metrics import greater_is_better
from .recipe import Recipe, recipe_from_dict, set_key
from .run_folder import FINISHED_MARKER, RunLock, check_study_folder, load_run, run_metrics, scores_of
from .search_space import default_space, sample, single_values

SEARCH_RECIPE = "search.yaml"
STORAGE = "search.db"
RESULTS = "search.jsonl"
BEST_RECIPE = "best_recipe.yaml"
TRIALS = "trials"
STUDY = "mha-ft-search"
#: Trials drawn at random before TPE models the results, and before the median pruner compares with them.
STARTUP_TRIALS = 2
#: Evaluations of a trial never pruned: the first ones mostly measure warm-up, and a lower learning rate that
#: starts slower and ends better was cut at the first evaluation on SST-2 (docs/benchmarks.md).
UNPRUNED_EVALUATIONS = 2
#: The note of a trial whose search was killed while it ran; its values and run folder went to a new trial.
KILLED = "killed while running; its run continues in a later trial"


@dataclass
class SearchPlan:
    recipe: Recipe  # what every trial starts from, without its search section
    space: dict[str, tuple[str, list]]
    trials: int
    out: Path

    def searched(self) -> Recipe:
        """The recipe with the space it is searched over (search.yaml): what a continued search must match."""
        section = {key: {kind: values} for key, (kind, values) in self.space.items()}
        return self.recipe.model_copy(update={"search": section})


def plan_search(recipe: Recipe, trials: int, overwrite: bool = False) -> SearchPlan:
    """Every check of the search before a model or data is loaded: the trial count, the folder, and that each
    bound and choice of the space makes a valid recipe."""
    from .search_space import parse_space
    from .tuning import resolve

    if trials < 1:
        raise UserError(f"--trials must be 1 or more, got {trials}")
    if str(recipe.train.get("eval_strategy", "epoch")) == "no":
        raise UserError("search: trials are compared on validation; remove train.eval_strategy=no")
    out = Path(recipe.output_dir)
    base = recipe.model_copy(update={"search": {}})
    space = parse_space(recipe.search) if recipe.search else default_space(
        recipe.tuning.method, resolve(recipe).usual_learning_rate())
    check_space(base, space)
    plan = SearchPlan(base, space, trials, out)
    check_study_folder(out, SEARCH_RECIPE, plan.searched(), overwrite, "search")
    check_data(base)
    return plan


def check_space(base: Recipe, space: dict[str, tuple[str, list]]) -> None:
    from .tuning import resolve

    for values in single_values(space, base.tuning.method):
        key, value = list(values.items())[-1]
        try:
            resolve(trial_recipe(base, values, Path(base.output_dir)))
        except UserError as exc:
            where = f"{base.source}: " if base.source else ""
            raise UserError(f"{where}search.{key}: the value {echo(value)} makes an invalid recipe: "
                            f"{str(exc).removeprefix(where)}") from None


def trial_recipe(base: Recipe, values: dict[str, Any], run: Path) -> Recipe:
    tree = base.model_dump(mode="json", exclude={"source"})
    for key, value in values.items():
        set_key(tree, key.split("."), value, f"search.{key}")
    tree["output_dir"] = str(run)
    return recipe_from_dict(tree, base.source)


def run_search(plan: SearchPlan, overwrite: bool = False, console=None) -> list[dict]:
    """Run trials until `plan.trials` have finished (completed or pruned); return search.jsonl's rows."""
    import optuna

    from .run_folder import clear_output_dir

    out = plan.out
    with RunLock(out):
        if overwrite:
            clear_output_dir(out)
        if not (out / SEARCH_RECIPE).is_file():
            fsutil.write_text(out / SEARCH_RECIPE, plan.searched().to_yaml())
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=STUDY, storage=f"sqlite:///{out / STORAGE}", load_if_exists=True, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=int(plan.recipe.train.get("seed", 42)),
                                               n_startup_trials=STARTUP_TRIALS),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=UNPRUNED_EVALUATIONS),
        )
        _requeue_killed(study, console)
        say(console, _opening_line(plan, study))
        failures = 0
        while _finished(study) < plan.trials:
            if failures >= plan.trials:
                raise RunStopped(f"search: {failures} trials failed (see {out / RESULTS}); stopped", exit_code=1)
            failures += not _run_trial(plan, study, console)
            _write_results(plan, study)
        return _write_results(plan, study)


def _opening_line(plan: SearchPlan, study) -> str:
    keys = ", ".join(f"{key} ({kind} {', '.join(map(str, values))})" for key, (kind, values) in plan.space.items())
    done = _finished(study)
    resumed = f"; continuing: {done} of {plan.trials} trials done" if done else ""
    return f"search: {plan.trials} trials over {keys}; study {plan.out / STORAGE}{resumed}"


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _requeue_killed(study, console) -> None:
    """Trials left running by a killed search are marked failed and queued again with their values and run
    folder, so the new trial resumes that run from its last checkpoint."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "note", KILLED)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # no public call ends a dead trial
        study.enqueue_trial(trial.params, user_attrs={"run": trial.user_attrs.get("run"), "values": trial.user_attrs.get("values")})
        say(console, f"trial {trial.number} was cut short: queued again, resuming {trial.user_attrs.get('run')}")


class TrialReporter:
    """Reports each evaluation's metric to the Optuna trial and stops the run when the median pruner says so."""

    def __init__(self, trial):
        from transformers import TrainerCallback

        self.trial, self.pruned, self.evaluations, self.metric = trial, False, 0, None
        reporter = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                reporter.metric = args.metric_for_best_model

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                value = (metrics or {}).get(f"eval_{args.metric_for_best_model}")
                if value is None or not math.isfinite(value):
                    return control
                reporter.evaluations += 1
                reporter.trial.report(_signed(args.metric_for_best_model, value), reporter.evaluations)
                if reporter.trial.should_prune():
                    reporter.pruned = True
                    control.should_training_stop = True
                return control

        self.callback = Callback()


def _signed(metric: str, value: float) -> float:
    return value if greater_is_better(metric) else -value


def _run_trial(plan: SearchPlan, study, console) -> bool:
    """One trial, start to end; False when its run failed (diverged)."""
    import optuna

    from .training import train

    trial = study.ask()
    values = sample(trial, plan.space, plan.recipe.tuning.method)
    run = Path(trial.user_attrs.get("run") or plan.out / TRIALS / f"trial-{trial.number:03d}")
    trial.set_user_attr("run", str(run))
    trial.set_user_attr("values", values)
    recipe = trial_recipe(plan.recipe, values, run)
    reporter = TrialReporter(trial)
    say(console, f"[bold]trial {trial.number}[/] ({_finished(study) + 1} of {plan.trials}): "
        + ", ".join(f"{key.split('.')[-1]} {_shown(v)}" for key, v in values.items()))
    started = time.time()
    try:
        if (run / FINISHED_MARKER).is_file():  # finished before the search was killed, not yet told
            metrics = run_metrics(run)
        else:
            metrics = train(recipe, console=None, callbacks=(reporter.callback,))
    except RunStopped as exc:
        if exc.exit_code != 1:  # interrupted: the trial stays running, to be resumed
            raise
        trial.set_user_attr("note", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        say(console, f"  failed: {exc}")
        return False
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    metric = reporter.metric or _best_metric_name(metrics)
    value = metrics.get(f"eval_{metric}")
    trial.set_user_attr("metric", metric)
    trial.set_user_attr("value", value)
    trial.set_user_attr("seconds", round(time.time() - started, 1))
    if reporter.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, _signed(metric, value))
    say(console, f"  {'pruned' if reporter.pruned else 'done'}: {metric} {value:.4f} in {time.time() - started:.0f} s · {run}")
    return True


def _best_metric_name(metrics: dict) -> str:
    """The metric that chose the best checkpoint: the first validation score the task reports (metrics.json keeps
    the task's order)."""
    return next(key for key in scores_of(metrics, with_loss=False) if key.startswith("eval_")).removeprefix("eval_")


def _shown(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _write_results(plan: SearchPlan, study) -> list[dict]:
    """search.jsonl from the study (the one source of truth), and best_recipe.yaml from its best trial."""
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING:
            continue
        rows.append({
            "trial": trial.number, "state": "killed" if trial.user_attrs.get("note") == KILLED else trial.state.name.lower(), "values": trial.user_attrs.get("values", trial.params),
            "metric": trial.user_attrs.get("metric"), "value": trial.user_attrs.get("value"),
            "seconds": trial.user_attrs.get("seconds"), "run": trial.user_attrs.get("run"),
            **({"note": trial.user_attrs["note"]} if "note" in trial.user_attrs else {}),
        })
    fsutil.write_jsonl(plan.out / RESULTS, rows)
    best = best_row(rows)
    if best is not None:
        recipe = load_run(best["run"])
        recipe.output_dir = str(plan.out / "best")
        complete = sum(row["state"] == "complete" for row in rows)
        header = (f"# The best of {complete} complete trials of `mha-ft search` in {plan.out}: trial {best['trial']}, "
                  f"{best['metric']} {best['value']:.4f} on validation ({best['run']}).\n")
        fsutil.write_text(plan.out / BEST_RECIPE, header + recipe.to_yaml())
    return rows


def best_row(rows: list[dict]) -> dict | None:
    complete = [row for row in rows if row["state"] == "complete"]
    return max(complete, key=lambda row: _signed(row["metric"], row["value"])) if complete else None
