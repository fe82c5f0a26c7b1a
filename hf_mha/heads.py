"""`mha-ft heads`: a finished run's attention heads: attention maps, head importance, pruned copies.

All three work on the run's model with our attention swapped in (whatever the recipe's `model.attention`):

- `attention_maps`: one text's attention probabilities as a layers x heads grid (`attention_maps.png`);
- `importance`: Michel et al.'s head importance on a labelled split or file (`head_importance.png`, `.json`);
- `prune_run`: a copy of the run with the least important heads removed, in a new run folder that
  `mha-ft eval --run` reads and that a recipe can fine-tune further (`model.name=<that folder>`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import fsutil
from .console import say
from .errors import UserError
from .models import stock_layout
from .recipe import Recipe
from .run_folder import FINISHED_MARKER, RECIPE_FILE, check_new_folder, load_run
from .inference import SavedModel, check_labels, load_saved
from .training import eval_batch_size
from .tuning import adapter_family

MAPS_FILE = "attention_maps.png"
IMPORTANCE_PNG = "head_importance.png"
IMPORTANCE_JSON = "head_importance.json"


@dataclass
class Importance:
    scores: torch.Tensor  # [modules, heads], NaN at pruned heads
    source: str  # the split or file scored
    examples: int
    rows: str  # what a row is: a layer, or (ALBERT) an attention module shared across layers


def load_heads_model(run: str | Path, recipe: Recipe | None = None) -> SavedModel:
    """The run's model in eval mode with our attention swapped in, its recipe (read from the run unless given),
    task, labels and tokenizer."""
    saved = load_saved(recipe or load_run(run), run, attention="mha")
    saved.model.eval()
    return saved


def attention_maps(saved: SavedModel, text: str, out: Path) -> Path:
    """Write the attention of every layer and head on `text` as a grid PNG; returns its path.
    Pruned heads show as empty (all-zero) maps at their original positions."""
    from .attention import attention_probs
    from .attention.pruning import kept_heads
    from .reports import save_attention_grid_png

    if not text.strip():
        raise UserError("--text: give a non-empty text to draw the attention maps of")
    encoded = saved.tokenizer(text, truncation=True, max_length=saved.recipe.data.max_length, return_tensors="pt")
    inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    model = saved.model
    with torch.no_grad(), attention_probs(model) as maps:
        model(**inputs)
    kept = kept_heads(model)
    # ALBERT's shared module runs once per layer: its kept heads repeat for every map it produced.
    per_call = kept if len(kept) == len(maps) else kept * (len(maps) // len(kept))
    length = encoded["input_ids"].shape[1]
    grid = torch.zeros(len(maps), model.config.num_attention_heads, length, length)
    for layer, (probs, heads) in enumerate(zip(maps, per_call)):
        grid[layer, heads] = probs[0].float()
    tokens = saved.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    return save_attention_grid_png(grid, tokens, out / MAPS_FILE, title=f"Attention maps · {_short(text)}")


def importance(saved: SavedModel, split: str = "validation", file: str | None = None,
               max_samples: int | None = None) -> Importance:
    """Head importance of the run's model on a split of its recipe's data or on a labelled file."""
    from torch.utils.data import DataLoader

    from .attention.importance import head_importance
    from .data import load_split, read_inputs

    recipe = saved.recipe
    if file:
        raw, source = read_inputs(file, "--file"), file
    else:
        raw, source = load_split(recipe, split), split
    if max_samples is not None:
        raw = raw.select(range(min(max_samples, len(raw))))
    check_labels(saved, raw, Path(file).name if file else split)
    # Training features: inputs and labels only (the loss needs labels; QA's eval features lack its positions).
    features = saved.task.preprocess(raw, saved.tokenizer, recipe, saved.labels, training=True)
    batches = DataLoader(features, batch_size=eval_batch_size(recipe), collate_fn=saved.task.collator(saved.tokenizer, recipe))
    shared = saved.model.config.model_type == "albert"
    rows = "attention modules shared across layers (ALBERT groups)" if shared else "layers"
    return Importance(head_importance(saved.model, batches), source, len(raw), rows)


def save_importance(result: Importance, out: Path) -> tuple[Path, Path]:
    """Write head_importance.json (scores, null at pruned heads, and the least important first) and the PNG."""
    from .reports import save_heatmap_png

    scores = result.scores
    rows = [[None if math.isnan(v) else round(v, 6) for v in row] for row in scores.tolist()]
    ranking = sorted(
        ((value, layer, head) for layer, row in enumerate(rows) for head, value in enumerate(row) if value is not None)
    )
    fsutil.write_json(out / IMPORTANCE_JSON, {
        "source": result.source,
        "examples": result.examples,
        "normalization": "per-layer L2 (Michel et al. 2019)",
        "rows": result.rows,
        "importance": rows,
        "least_important_first": [{"layer": layer, "head": head, "importance": value} for value, layer, head in ranking],
    })
    png = save_heatmap_png(
        scores.nan_to_num(nan=0.0), out / IMPORTANCE_PNG, title=f"Head importance · {result.source}",
        xlabel="head", ylabel="layer", colorbar_label="|dL/d mask| (layer-normalised)", vmin=0.0,
    )
    return out / IMPORTANCE_JSON, png


def check_prunable(run: str | Path, out: str | Path) -> None:
    """`--prune` writes a new folder and removes heads from full weights: checked before any model loads."""
    check_new_folder(Path(out), "--out", "choose a new folder for the pruned run")
    family = adapter_family(run)
    if family is not None:
        raise UserError(
            f"--prune: {run} holds an adapter ({family.ADAPTER_CONFIG}), whose weights sit on top of the heads; prune "
            "a full fine-tuning run (tuning.method: full), or export this one (mha-ft export) and fine-tune that"
        )


def prune_run(saved: SavedModel, scores: torch.Tensor, fraction: float, out: str | Path, run: str | Path) -> dict:
    """Write a copy of the run with `fraction` of its heads pruned (least important first) to `out`, a new run
    folder: the pruned model (config.hf_mha_pruned_heads), tokenizer, recipe (model.name and output_dir set to
    `out`, so `mha-ft train --recipe <out>/recipe.yaml output_dir=...` fine-tunes the pruned model) and
    metrics.json with the head and parameter counts. Returns those metrics."""
    from .attention.pruning import kept_heads, prune_by_importance

    out = Path(out)
    check_prunable(run, out)
    model = saved.model
    params_before = sum(p.numel() for p in model.parameters())
    heads_before = sum(len(heads) for heads in kept_heads(model))
    pruned = prune_by_importance(model, scores, fraction=fraction)
    heads_after = sum(len(heads) for heads in kept_heads(model))
    metrics = {
        "heads_before": heads_before, "heads_after": heads_after, "heads_pruned": heads_before - heads_after,
        "params_before": params_before, "total_params": sum(p.numel() for p in model.parameters()),
    }
    recipe = saved.recipe
    pruned_recipe = recipe.model_copy(update={
        "model": recipe.model.model_copy(update={"name": str(out.resolve())}), "output_dir": str(out.resolve()),
    })
    out.mkdir(parents=True, exist_ok=True)
    fsutil.write_text(out / RECIPE_FILE, pruned_recipe.to_yaml())
    with stock_layout(model):  # as every run folder
        model.save_pretrained(out)
    saved.tokenizer.save_pretrained(out)
    fsutil.write_json(out / "pruned_heads.json", {str(layer): heads for layer, heads in pruned.items()})
    fsutil.write_json(out / FINISHED_MARKER, metrics)  # last: marks the folder complete
    return metrics


def heads_command(run: str, text: str | None, want_importance: bool, split: str, file: str | None,
                  max_samples: int | None, prune: float | None, out: str | None, console=None) -> list[Path]:
    """What `mha-ft heads` does (the CLI has checked that the options go together); returns the files written."""
    recipe = load_run(run)
    if prune is not None:
        check_prunable(run, out)
    saved = load_heads_model(run, recipe)
    folder = Path(run)
    written = []
    if text is not None:
        written.append(attention_maps(saved, text, folder))
    if want_importance or prune is not None:
        result = importance(saved, split, file, max_samples)
        written.extend(save_importance(result, folder))
        say(console, f"Head importance on {result.source} ({result.examples:,} examples)")
        if prune is not None:
            metrics = prune_run(saved, result.scores, prune, out, run)
            written.append(Path(out))
            say(console, f"Pruned {metrics['heads_pruned']} of {metrics['heads_before']} heads: "
                          f"{metrics['params_before']:,} -> {metrics['total_params']:,} parameters")
    for path in written:
        say(console, f"Wrote {path}")
    return written


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
