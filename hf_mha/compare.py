"""`mha-ft compare RUN...`: finished runs side by side. One table: the recipe keys whose values differ between
the runs, then each split's metrics, trainable parameters, train time and samples/s; `--plot` draws the chosen
metric per run and the validation curves of every run overlaid (from each folder's log_history.json)."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

import yaml

from . import fsutil
from .errors import UserError
from .run_folder import LOG_HISTORY_FILE, RECIPE_FILE, check_finished_run, flat_keys, load_run, run_metrics, scores_of

#: What every run shows after its metrics, in this order.
COST_KEYS = ("trainable_params", "trainable_percent", "train_runtime", "train_samples_per_second")


def run_folders(patterns: list[str]) -> list[Path]:
    """The folders named, globs expanded (quoted globs too), each once, in the order given."""
    folders: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"compare: no run folder matches {pattern!r}")
        for match in matches:
            path = Path(match)
            if glob.has_magic(pattern) and not (path / RECIPE_FILE).is_file():
                continue  # a glob over runs/* may catch files and folders that are not runs
            check_finished_run(path, "compare")
            if path.resolve() not in [f.resolve() for f in folders]:
                folders.append(path)
    if len(folders) < 2:
        raise UserError(f"compare: give two or more finished run folders (got {len(folders)})")
    return folders


def comparison(folders: list[Path]) -> tuple[list[str], list[list[str]]]:
    """Row labels and, per row, one cell per run: differing recipe keys, metrics, cost."""
    recipes = [flat_keys(yaml.safe_load((f / RECIPE_FILE).read_text(encoding="utf-8")) or {}) for f in folders]
    metrics = [run_metrics(f) for f in folders]
    keys = sorted({k for r in recipes for k in r} - {"output_dir"})
    differing = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in recipes}) > 1]
    scores = list(dict.fromkeys(k for m in metrics for k in scores_of(m, with_loss=False)))
    rows, labels = [], []
    for key in differing:
        labels.append(key)
        rows.append([_cell(r.get(key)) for r in recipes])
    for key in [*scores, *COST_KEYS]:
        if any(key in m for m in metrics):
            labels.append(key)
            rows.append([_cell(m.get(key)) for m in metrics])
    return labels, rows


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def plot(folders: list[Path], metric: str, path: Path, throughput: list[float] | None = None) -> Path:
    """Two panels: `metric` per run (bars), and the validation curve of `metric` of every run against step; with
    `throughput`, a third: `metric` against predict samples/s (the accuracy/speed frontier)."""
    from .reports import new_figure, log_points, save_png

    metrics = [run_metrics(f) for f in folders]
    if not any(metric in m for m in metrics):
        known = sorted({k for m in metrics for k in m
                        if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))})
        raise UserError(f"--metric: no run has {metric!r}; metrics: {', '.join(known)}")
    figure = new_figure(16 if throughput else 11, 4.5, layout="constrained")
    bars, curves, *frontier = figure.subplots(1, 3 if throughput else 2)
    names = [f.name for f in folders]
    bars.bar(range(len(folders)), [m.get(metric, 0.0) for m in metrics], color="tab:blue")
    bars.set_xticks(range(len(folders)), names, rotation=30, ha="right")
    bars.set_ylabel(metric)
    bars.set_title(f"{metric} per run")
    for folder in folders:
        history_file = folder / LOG_HISTORY_FILE
        if history_file.is_file():
            steps, values = log_points(json.loads(history_file.read_text(encoding="utf-8")), metric)
            curves.plot(steps, values, marker="o", markersize=3, label=folder.name)
    curves.set_xlabel("step")
    curves.set_ylabel(metric)
    curves.set_title("validation curves")
    curves.grid(alpha=0.3)
    if curves.get_legend_handles_labels()[0]:
        curves.legend(loc="best", fontsize=8)
    if frontier:
        values = [m.get(metric, 0.0) for m in metrics]
        frontier[0].scatter(throughput, values, color="tab:green")
        for name, x, y in zip(names, throughput, values):
            frontier[0].annotate(name, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        frontier[0].set_xlabel("predict samples/s (CPU)")
        frontier[0].set_ylabel(metric)
        frontier[0].set_title("accuracy against speed")
        frontier[0].grid(alpha=0.3)
    save_png(figure, path)
    return path


def speed_rows(folders: list[Path]) -> tuple[list[str], list[list[str]], list[float]]:
    """The frontier rows: CPU predict samples/s measured side by side (`hf_mha.speed`), the speed-up over the first
    run, parameters and weights size."""
    from .speed import inference_speed

    measured = inference_speed(folders)
    base = measured[0]["samples_per_second"]
    where = f"{measured[0]['examples']} {measured[0]['split']} examples, {measured[0]['threads']} threads"
    labels = [f"predict samples/s (CPU, {where})", "predict speed-up", "parameters", "weights MB"]
    rows = [[f"{m['samples_per_second']:.1f}" for m in measured], [f"{m['samples_per_second'] / base:.2f}x" for m in measured],
            [f"{m['parameters']:,}" for m in measured], [f"{m['weights_bytes'] / 2**20:.1f}" for m in measured]]
    return labels, rows, [m["samples_per_second"] for m in measured]


def compare(patterns: list[str], plot_path: Path | None = None, metric: str | None = None, speed: bool = False):
    """`mha-ft compare`: the run folders, the table's row labels and cells, and the PNG written (or None). The
    plot's path is checked before anything is read; its metric defaults to the first run's best-checkpoint
    metric (the first of eval.metrics). With `speed`, the frontier rows too, and the plot gets the metric
    against samples/s."""
    if plot_path is not None and not fsutil.can_write_in(fsutil.nearest_existing(plot_path.absolute().parent)):
        raise UserError(f"--plot: cannot write {plot_path} (permission denied); choose another path")
    folders = run_folders(patterns)
    labels, rows = comparison(folders)
    throughput = None
    if speed:
        more_labels, more_rows, throughput = speed_rows(folders)
        labels, rows = labels + more_labels, rows + more_rows
    if plot_path is None:
        return folders, labels, rows, None
    chosen = metric or (load_run(folders[0]).eval.metrics or ["accuracy"])[0]
    chosen = chosen if chosen.startswith(("eval_", "test_")) else f"eval_{chosen}"
    return folders, labels, rows, plot(folders, chosen, plot_path, throughput)
