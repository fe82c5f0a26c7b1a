"""Human-readable evaluation output: per-class and per-entity text reports, and PNG plots for the run folder.

Plots use matplotlib's object API (`Figure` + the Agg canvas) rather than pyplot, so nothing here changes the
global backend or leaks figures in a long-running process, and it works on machines without a display.
matplotlib is imported inside the functions: the text reports, and anything importing this module for them,
stay light. Every file goes through `fsutil.atomic_path`, so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from . import fsutil


def classification_report_text(references, predictions, label_names: Sequence[str]) -> str:
    """Per-class precision/recall/F1/support, then accuracy, macro and weighted averages (scikit-learn layout).

    Every class in `label_names` gets a row, including classes absent from this split (support 0, scores 0), so
    reports of different splits line up.
    """
    from sklearn.metrics import classification_report

    return classification_report(
        np.asarray(references), np.asarray(predictions), labels=list(range(len(label_names))),
        target_names=[str(name) for name in label_names], digits=4, zero_division=0,
    )


def entity_report_text(true_tag_seqs, pred_tag_seqs, mode: str | None = None, scheme=None, suffix: bool = False) -> str:
    """Per-entity-type precision/recall/F1/support, then micro, macro and weighted averages (seqeval layout).

    `mode="strict"` scores only chunks valid in `scheme` (by default detected from the gold tags), as the seqeval
    metric does.
    """
    from seqeval.metrics import classification_report

    from .metrics.entities import resolve_scheme

    true_tag_seqs = [list(tags) for tags in true_tag_seqs]
    pred_tag_seqs = [list(tags) for tags in pred_tag_seqs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's mean of an empty list when there is no entity
        report = classification_report(
            true_tag_seqs, pred_tag_seqs, digits=4, mode=mode, scheme=resolve_scheme(scheme, mode), suffix=suffix,
            zero_division=0, output_dict=True,
        )
    if len(report) == 3:  # only the three averages: no entity in the gold tags or the predictions
        return "no entities in the references or the predictions\n"
    return classification_report(
        true_tag_seqs, pred_tag_seqs, digits=4, mode=mode, scheme=resolve_scheme(scheme, mode), suffix=suffix,
        zero_division=0,
    )


def squad_report_text(scores: dict[str, float], golds: list[dict], with_null: bool) -> str:
    """EM and F1 of a SQuAD split (v2.0: answerable and unanswerable questions apart, and the best threshold)."""
    answerable = sum(1 for gold in golds if gold["text"])
    lines = [f"SQuAD {'v2.0' if with_null else 'v1.1'} · {len(golds):,} questions"
             + (f" ({answerable:,} answerable, {len(golds) - answerable:,} not)" if with_null else "")]
    lines += [f"{'exact_match':<14}{scores['exact_match']:8.2f}", f"{'f1':<14}{scores['f1']:8.2f}"]
    for group in ("HasAns", "NoAns"):
        if f"{group}_f1" in scores:
            lines.append(f"{group:<14}{scores[f'{group}_exact']:8.2f}{scores[f'{group}_f1']:8.2f}  (exact, f1)")
    if "best_f1" in scores:
        lines.append(f"{'best_f1':<14}{scores['best_f1']:8.2f}  at no-answer probability {scores['best_f1_thresh']:.3f}")
    return "\n".join(lines) + "\n"


def new_figure(width: float, height: float, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    with fsutil.atomic_path(path) as tmp:
        # The temp name ends in .tmp, so the format must be explicit.
        figure.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def _as_array(values) -> np.ndarray:
    """numpy view of a list, array or torch tensor (any device or dtype), without importing torch here."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _text_colour(image, value) -> str:
    """Black on light cells, white on dark ones, whatever the colour map."""
    red, green, blue, _ = image.cmap(image.norm(value))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _short(label, limit: int = 18) -> str:
    label = str(label)
    return label if len(label) <= limit else label[: limit - 1] + "…"


def save_confusion_matrix_png(references, predictions, label_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Counts of (true, predicted) class pairs as an annotated heat map; rows are true classes."""
    from sklearn.metrics import confusion_matrix

    references, predictions = np.asarray(references), np.asarray(predictions)
    n = len(label_names)
    counts = confusion_matrix(references, predictions, labels=list(range(n)))
    total = int(counts.sum())
    accuracy = np.trace(counts) / total if total else 0.0

    side = min(max(4.5, 0.5 * n + 2.5), 18.0)  # about 0.5 inch (36 pt) per class: room for a 4-digit count
    figure = new_figure(side + 1.0, side, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="examples")

    tick_size, count_size = (10, 11) if n <= 10 else (8, 8) if n <= 20 else (7, 6.5)
    names = [_short(name) for name in label_names]
    rotation, align = (45, "right") if n <= 12 else (90, "center")
    ax.set_xticks(range(n), names, fontsize=tick_size, rotation=rotation, ha=align)
    ax.set_yticks(range(n), names, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({total} examples, accuracy {accuracy:.4f})")

    for row in range(n):
        for column in range(n):
            value = counts[row, column]
            ax.text(
                column, row, str(value), ha="center", va="center", fontsize=count_size, color=_text_colour(image, value)
            )
    return save_png(figure, path)


def log_points(log_history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for entry in log_history:
        value, step = entry.get(key), entry.get("step")
        if isinstance(value, (int, float)) and step is not None and math.isfinite(value):
            steps.append(step)
            values.append(float(value))
    return steps, values


def save_loss_curve_png(log_history: Sequence[dict], path: str | os.PathLike, metric: str | None = None) -> bool:
    """Training and eval loss against step, from `Trainer.state.log_history`; False (no file) when there is none.

    `metric` (e.g. "eval_f1") adds that eval metric on a second axis. Trainer's closing summary entry carries
    `train_loss`, not `loss`, so it is not mistaken for a point of the curve.
    """
    train_steps, train_loss = log_points(log_history, "loss")
    eval_steps, eval_loss = log_points(log_history, "eval_loss")
    metric_steps, metric_values = log_points(log_history, metric) if metric else ([], [])
    if not (train_loss or eval_loss or metric_values):
        return False

    figure = new_figure(7.5, 4.5, layout="constrained")
    ax = figure.add_subplot()
    if train_loss:
        ax.plot(train_steps, train_loss, color="tab:blue", linewidth=1.2, label="train loss")
    if eval_loss:
        # Markers: eval points are few, and a single one would not show as a line.
        ax.plot(eval_steps, eval_loss, color="tab:orange", marker="o", markersize=4, linewidth=1.5, label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if metric_values:
        other = ax.twinx()
        other.plot(metric_steps, metric_values, color="tab:green", marker="s", markersize=4, linestyle="--", label=metric)
        other.set_ylabel(metric)
        more_handles, more_labels = other.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best")
    ax.set_title("Training loss" if not eval_loss else "Training and evaluation loss")
    save_png(figure, path)
    return True


def save_heatmap_png(
    matrix,
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    xticklabels: Sequence | None = None,
    yticklabels: Sequence | None = None,
    annotate: bool | None = None,
    fmt: str = ".2f",
    cmap: str = "viridis",
    colorbar_label: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A 2-D matrix as a heat map with a colour bar (e.g. head importance: rows layers, columns heads).

    Ticks default to 0..n-1. Values are written in the cells when `annotate` is True, or by default when the
    matrix is small enough (at most 20x20) for the numbers to fit.
    """
    values = _as_array(matrix)
    if values.ndim != 2:
        raise ValueError(f"save_heatmap_png needs a 2-D matrix, got shape {values.shape}")
    rows, columns = values.shape
    if annotate is None:
        annotate = rows <= 20 and columns <= 20

    width, height = min(max(4.0, 0.55 * columns + 2.5), 20.0), min(max(3.0, 0.45 * rows + 1.8), 16.0)
    figure = new_figure(width, height, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax)
    figure.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xticks(range(columns), [_short(x) for x in (range(columns) if xticklabels is None else xticklabels)], fontsize=8)
    ax.set_yticks(range(rows), [_short(y) for y in (range(rows) if yticklabels is None else yticklabels)], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if annotate:
        for row in range(rows):
            for column in range(columns):
                value = values[row, column]
                ax.text(
                    column, row, format(value, fmt), ha="center", va="center", fontsize=7,
                    color=_text_colour(image, value),
                )
    return save_png(figure, path)


def save_attention_grid_png(attn, tokens: Sequence[str], path: str | os.PathLike, title: str) -> Path:
    """Attention maps of one example as a layers x heads grid; rows of each map are queries, columns keys.

    `attn` has shape [layers, heads, seq, seq] (tensor or array). Token labels go on the left column (queries) and
    the bottom row (keys) only, thinned to every k-th token when they would not fit. All maps share one colour
    scale, from 0 to the largest weight, so heads can be compared; the scale is a square root, because a few
    heads put ~0.9 on [CLS]/[SEP] and would otherwise leave every other map black.
    """
    from matplotlib.colors import PowerNorm

    weights = _as_array(attn)
    if weights.ndim != 4 or weights.shape[2] != weights.shape[3]:
        raise ValueError(f"attention must have shape [layers, heads, seq, seq], got {weights.shape}")
    layers, heads, seq, _ = weights.shape
    if len(tokens) != seq:
        raise ValueError(f"{len(tokens)} tokens for attention over {seq} positions")

    cell = min(1.6, max(0.9, 18.0 / heads))  # inches per map: 1.5 for 12 heads
    width, height = heads * cell + 2.2, layers * cell + 1.6
    figure = new_figure(width, height)
    axes = figure.subplots(layers, heads, squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.08})
    # Fixed margins in inches (token labels left and below, title above) whatever the grid size.
    figure.subplots_adjust(left=1.5 / width, right=0.92, bottom=1.0 / height, top=1 - 0.55 / height)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=float(weights.max()) if weights.size else 1.0)

    # At least ~7 points of map per label, so labels stay readable at 6x12.
    step = max(1, math.ceil(seq / max(1, int(cell * 72 / 7))))
    shown = list(range(0, seq, step))
    labels = [_short(tokens[i], 10) for i in shown]
    label_size = 6 if step == 1 and seq > 12 else 7

    image = None
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            image = ax.imshow(weights[layer, head], cmap="viridis", norm=norm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if head == 0:
                ax.set_yticks(shown, labels, fontsize=label_size)
                ax.set_ylabel(f"layer {layer}", fontsize=9)
            if layer == layers - 1:
                ax.set_xticks(shown, labels, fontsize=label_size, rotation=90)
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.6, fraction=0.02, pad=0.01, label="attention weight")
    figure.suptitle(title)
    return save_png(figure, path, dpi=110)
