"""Head pruning on a swapped model: remove heads for real, save and reload the result, export it for plain
transformers.

Pruning head h of an attention module deletes rows h*d_k:(h+1)*d_k of W^Q, W^K, W^V (weights and biases) and
the same columns of W^O, and lowers the module's `num_heads`. The outputs then equal the unpruned model's with
those heads masked to 0 (`set_head_mask`), with fewer parameters and less compute.

Head indices are always the *original* ones (0 .. config.num_attention_heads - 1), as in transformers v4's
`prune_heads`: pruning twice, or scoring importance on a pruned model, keeps the numbering of the checkpoint.
`config.hf_mha_pruned_heads` ({module index: [original heads]}) records what is gone; it is the only record,
so save_pretrained/`load_pruned` carry it along with the smaller weights.

Modules are those of `attention_modules(model)`: one per layer, except ALBERT, whose layers share one attention
module per group (usually one for the whole depth). Pruning ALBERT's module index g removes the head at every
depth that group runs at: there is no per-layer ALBERT head to remove, and keys beyond the groups are refused.

transformers v5 cannot build a model whose layers have different head counts, so a pruned folder does not
load with plain `from_pretrained`. `unprune_for_export` puts the pruned heads back as zeros: zero W^Q/W^K/W^V
rows and biases give the head a context of exactly 0, and zero W^O columns drop even that, so outputs are
unchanged and plain transformers loads the result. The exported model is as large and as slow as the unpruned
one: pruning saves compute only while the model is loaded with `load_pruned`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from hf_mha.attention.head_masks import attention_modules
from hf_mha.attention.mha import MultiHeadAttention
from hf_mha.attention.swap import (
    AlbertMultiHeadAttention,
    DistilBertMultiHeadAttention,
    restore_attention,
    swap_attention,
)
from hf_mha.errors import UserError

#: The config attribute recording pruned heads: {module index: [original head indices]}.
CONFIG_KEY = "hf_mha_pruned_heads"
#: from_pretrained arguments about where and how to read files, not about the model: a pruned folder is local
#: safetensors, so they have nothing more to say there.
LOADING_ONLY = ("revision", "trust_remote_code", "use_safetensors", "cache_dir", "local_files_only", "token")


def pruned_heads(config) -> dict[int, list[int]]:
    """The heads `config` records as pruned, with int keys (config.json turns them into strings)."""
    recorded = getattr(config, CONFIG_KEY, None) or {}
    return {int(module): sorted(int(h) for h in heads) for module, heads in recorded.items() if heads}


def kept_heads(model: nn.Module) -> list[list[int]]:
    """Per attention module, the original indices of the heads it still holds, in the order it holds them."""
    modules = attention_modules(model)
    config = _config(model)
    gone = pruned_heads(config)
    kept = [[h for h in range(config.num_attention_heads) if h not in gone.get(i, ())] for i in range(len(modules))]
    for i, (module, heads) in enumerate(zip(modules, kept)):
        if module.num_heads != len(heads):
            raise UserError(
                f"attention module {i} holds {module.num_heads} heads but config.{CONFIG_KEY} leaves {len(heads)}; "
                "the model was pruned outside hf_mha.attention.pruning or its config was edited: reload it with "
                "load_pruned"
            )
    return kept


def prune_heads(model: nn.Module, heads_to_prune: Mapping[int, Sequence[int]]) -> nn.Module:
    """Remove heads in place: {module index: [original head indices]}; returns `model`.

    `model` must be swapped (`swap_attention`) and not wrapped by PEFT adapters on W^Q/W^K/W^V/W^O. Heads
    already pruned are skipped; every module keeps at least one head. Records the union in the config.
    """
    modules = attention_modules(model)
    config = _config(model)
    kept = kept_heads(model)
    requested = _checked_request(heads_to_prune, kept, config)
    for index, heads in requested.items():
        module = modules[index]
        positions = [p for p, h in enumerate(kept[index]) if h not in heads]  # the heads that stay, as held now
        rows = _head_rows(positions, module.head_dim, module.projections()[0].weight.device)
        for projection in module.projections():
            _keep_rows(_plain_linear(projection, index), rows)
        _keep_columns(_plain_linear(output_projection(model, module), index), rows)
        if module.head_mask is not None:
            module.head_mask = module.head_mask[positions]
        module.num_heads = len(positions)
    gone = pruned_heads(config)
    for index, heads in requested.items():
        gone[index] = sorted(set(gone.get(index, ())) | set(heads))
    setattr(config, CONFIG_KEY, {str(i): heads for i, heads in sorted(gone.items())})
    return model


def prune_by_importance(
    model: nn.Module, importance: torch.Tensor, *, fraction: float | None = None, count: int | None = None
) -> dict[int, list[int]]:
    """Prune the least important heads (by `importance`, [modules, original heads], NaN at heads already gone)
    and return what was pruned: `count` heads, or `fraction` of the heads the model holds now, rounded down.
    A module's last head is never pruned, so fewer may go than asked when importance piles up in one module."""
    if (fraction is None) == (count is None):
        raise UserError("prune_by_importance: give exactly one of fraction=F (0 <= F < 1) or count=N")
    kept = kept_heads(model)
    total = sum(len(heads) for heads in kept)
    if fraction is not None:
        if not 0 <= fraction < 1:
            raise UserError(f"prune fraction must be in [0, 1), got {fraction}; e.g. 0.5 prunes half the heads")
        count = math.floor(fraction * total)
    if count < 0 or count >= total:
        raise UserError(f"prune count must be between 0 and {total - 1} (the model holds {total} heads), got {count}")
    expected = (len(kept), _config(model).num_attention_heads)
    if tuple(importance.shape) != expected:
        raise UserError(
            f"importance must have shape [modules, heads] = {list(expected)} (from head_importance on this model), "
            f"got {list(importance.shape)}"
        )
    ranked = sorted((float(importance[i, h]), i, h) for i, heads in enumerate(kept) for h in heads)
    left = [len(heads) for heads in kept]
    chosen: dict[int, list[int]] = {}
    for _, i, h in ranked:
        if count == 0:
            break
        if left[i] > 1:
            chosen.setdefault(i, []).append(h)
            left[i] -= 1
            count -= 1
    prune_heads(model, chosen)
    return {i: sorted(heads) for i, heads in sorted(chosen.items())}


def unprune_for_export(model: nn.Module) -> nn.Module:
    """Give every module its full head count again, in place, the pruned heads as zeros; returns `model`.

    Outputs do not change (a zero head contributes exactly 0) and `config.hf_mha_pruned_heads` is dropped, so
    `restore_attention(model).save_pretrained(out)` loads with plain transformers. Meant for export: trained
    further, the zero heads would receive gradients and come back to life.
    """
    modules = attention_modules(model)
    config = _config(model)
    kept = kept_heads(model)
    full = config.num_attention_heads
    for index, (module, heads) in enumerate(zip(modules, kept)):
        if len(heads) == full:
            continue
        rows = _head_rows(heads, module.head_dim, module.projections()[0].weight.device)  # where the held heads belong
        size = full * module.head_dim
        for projection in module.projections():
            _expand_rows(_plain_linear(projection, index), rows, size)
        _expand_columns(_plain_linear(output_projection(model, module), index), rows, size)
        if module.head_mask is not None:
            mask = module.head_mask.new_zeros(full)
            mask[heads] = module.head_mask
            module.head_mask = mask
        module.num_heads = full
    if hasattr(config, CONFIG_KEY):
        delattr(config, CONFIG_KEY)
    return model


def load_pruned(model_class, folder: str | Path, *, config=None, backend: str = "auto", stock: bool = True,
                **from_pretrained_kwargs):
    """`model_class.from_pretrained(folder, ...)` that also loads what `prune_heads` + save_pretrained wrote.

    Without `config.hf_mha_pruned_heads` this is plain `from_pretrained` (all arguments passed on), so callers
    can use it for every folder. A pruned folder is rebuilt from its config (or `config`, e.g. with the label
    names of a new recipe; config attributes such as `num_labels=` given as keywords apply too), swapped to our
    attention (`backend`), pruned, and given the saved weights. The result comes back in the stock layout like
    any from_pretrained model, its stock attention modules sized to the pruned heads, so `swap_attention` on
    it keeps the pruned head counts; with `stock=False` it keeps our attention instead (any folder is swapped
    then), which spares a caller that wants ours a restore and a second swap.
    """
    from transformers import AutoConfig

    folder = Path(folder)
    loading = {k: from_pretrained_kwargs.pop(k) for k in LOADING_ONLY if k in from_pretrained_kwargs}
    found = config
    if found is None and (folder / "config.json").is_file():
        found = AutoConfig.from_pretrained(str(folder), trust_remote_code=loading.get("trust_remote_code", False))
    if found is None or not pruned_heads(found):
        given = {"config": config} if config is not None else {}
        model = model_class.from_pretrained(str(folder), **loading, **given, **from_pretrained_kwargs)
        return model if stock else swap_attention(model, backend=backend)
    config = copy.deepcopy(found)  # like from_pretrained, leave the caller's config as it was
    config.update(from_pretrained_kwargs)
    gone = pruned_heads(config)
    delattr(config, CONFIG_KEY)  # the model is built whole, then prune_heads records the heads again
    # Auto classes build through from_config; a concrete class is its own constructor.
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    swap_attention(model, backend=backend)
    prune_heads(model, gone)
    _load_weights(model, folder)
    if stock:
        restore_attention(model)
    return model.eval()


# --------------------------------------------------------------------------- helpers


def output_projection(model: nn.Module, module: MultiHeadAttention) -> nn.Module:
    """W^O of `module`: DistilBERT's `out_lin` and ALBERT's `dense` sit on the module itself; BERT, RoBERTa,
    XLM-R and ELECTRA keep it beside it, as the `output.dense` of the attention block holding `module`."""
    if isinstance(module, DistilBertMultiHeadAttention):
        return module.out_lin
    if isinstance(module, AlbertMultiHeadAttention):
        return module.dense
    for block in model.modules():
        if getattr(block, "self", None) is module:
            return block.output.dense
    raise UserError(f"cannot find the output projection (W^O) of {type(module).__name__}; prune heads of "
                    "BERT, RoBERTa, XLM-RoBERTa, ELECTRA, ALBERT or DistilBERT models")


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        raise UserError(f"{type(model).__name__} has no config with num_attention_heads; pass the transformers model")
    return config


def _checked_request(heads_to_prune: Mapping[int, Sequence[int]], kept: list[list[int]], config) -> dict[int, set[int]]:
    """{module: heads still held among those asked}; raise on bad indices or a module left with no head."""
    requested: dict[int, set[int]] = {}
    full = config.num_attention_heads
    for key, heads in heads_to_prune.items():
        index = int(key)
        if not 0 <= index < len(kept):
            shared = (
                f" (ALBERT shares its attention module across all {config.num_hidden_layers} layers: index 0 prunes "
                "a head at every depth)" if config.model_type == "albert" else ""
            )
            raise UserError(
                f"heads_to_prune: module index {key} is out of range; this model has {len(kept)} attention "
                f"modules, 0..{len(kept) - 1}{shared}"
            )
        bad = [h for h in heads if not 0 <= int(h) < full]
        if bad:
            raise UserError(f"heads_to_prune[{index}]: heads {bad} out of range; heads are 0..{full - 1}")
        remove = {int(h) for h in heads} & set(kept[index])
        if remove and len(remove) == len(kept[index]):
            raise UserError(
                f"heads_to_prune[{index}] would remove every remaining head of module {index} "
                f"(holds {kept[index]}); keep at least one head per module"
            )
        if remove:
            requested[index] = remove
    return requested


def _plain_linear(projection: nn.Module, index: int) -> nn.Linear:
    if type(projection) is not nn.Linear:
        raise UserError(
            f"attention module {index}: cannot prune heads through a {type(projection).__name__} wrapper; "
            "prune before adding adapters, or merge them first (mha-ft export)"
        )
    return projection


def _head_rows(positions: Sequence[int], head_dim: int, device) -> torch.Tensor:
    """Row indices of the given heads in a [h * d_k, ...] projection."""
    return (torch.tensor(positions, device=device)[:, None] * head_dim + torch.arange(head_dim, device=device)).flatten()


# New Parameters rather than in-place resizes: the Linear keeps its identity (names, hooks), and nothing can
# still hold a view of the old storage.
def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    grad = linear.weight.requires_grad
    linear.weight = nn.Parameter(linear.weight.detach()[rows].clone(), requires_grad=grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[rows].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor) -> None:
    grad = linear.weight.requires_grad
    linear.weight = nn.Parameter(linear.weight.detach()[:, columns].clone(), requires_grad=grad)
    linear.in_features = len(columns)


def _expand_rows(linear: nn.Linear, rows: torch.Tensor, size: int) -> None:
    weight = linear.weight.detach().new_zeros(size, linear.in_features)
    weight[rows] = linear.weight.detach()
    linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        bias = linear.bias.detach().new_zeros(size)
        bias[rows] = linear.bias.detach()
        linear.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    linear.out_features = size


def _expand_columns(linear: nn.Linear, columns: torch.Tensor, size: int) -> None:
    weight = linear.weight.detach().new_zeros(linear.out_features, size)
    weight[:, columns] = linear.weight.detach()
    linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    linear.in_features = size


def _load_weights(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no .safetensors weights next to its pruned config.json; save with save_pretrained")
    state = {}
    for file in files:
        state |= load_file(str(file))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: a config edited by hand, or labels changed by the caller
        raise UserError(
            f"{folder}: the saved weights do not fit the pruned model its config describes "
            f"({str(exc).splitlines()[1].strip()[:200]}); keep the folder's own config.json and label count"
        ) from None
    tied = set(model.all_tied_weights_keys)  # tied copies are not saved; tie_weights fills them in
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{folder}: weights do not match {type(model).__name__}: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}; load it with the task model class it was saved from"
        )
    model.tie_weights()
