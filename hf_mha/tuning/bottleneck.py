"""`tuning.method: bottleneck` (or `adapter`): bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020)
for BERT-style encoders.

An adapter is a small residual MLP inserted after a sublayer's output projection, before the residual add and
LayerNorm of the stock block:

    h = W_o x + b_o                      the sublayer's output projection (frozen)
    h + W_up f(W_down h)                 down to d / reduction_factor, non-linearity f, back up to d

Only the adapters (and the task head) train. W_up starts at zero, so the adapted model starts out computing
exactly what the base model computes. Placement:

- `houlsby`: after the attention output projection and after the feed-forward output projection (two per layer);
- `pfeiffer`: after the feed-forward output projection only (half the parameters, about the same accuracy).

Why it lives here: PEFT has no bottleneck adapter, and AdapterHub's `adapters` package, which has, pins
transformers 4.x while mha-ft is built on transformers 5. The module follows the shape of a PEFT tuner: a config
dataclass, a layer that wraps the base layer (`base_layer` + `adapter`), and functions to add, save, load and
remove adapters. The saved form mirrors PEFT's too: `bottleneck_config.json` (this config) and
`bottleneck_model.safetensors` (adapter and task-head weights only), reloaded on top of the base model.

Adapters cannot be merged into the base weights: f sits between W_down and W_up, so the adapter is not a linear
map and has no equivalent weight delta (unlike LoRA or IA3). An exported model keeps base and adapter apart.

Usable without the rest of mha-ft:

    from hf_mha.tuning.bottleneck import BottleneckConfig, add_bottleneck_adapters, load_bottleneck_adapters
    model = add_bottleneck_adapters(model, BottleneckConfig(placement="houlsby", modules_to_save=["classifier"]))
    ...train, then save_bottleneck_adapters(model, folder)
    model = load_bottleneck_adapters(AutoModelForSequenceClassification.from_pretrained(base), folder)
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .. import fsutil
from ..errors import UserError
from .base import Tuning, with_task_head

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "bottleneck_model.safetensors"

NON_LINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}

# Where the two output projections sit in each encoder family, as patterns on module names. Our attention
# (hf_mha.attention) keeps these modules under the same names, so adapters go to the same places after a swap.
# ALBERT shares one layer across depth, so its adapters are shared across depth as well.
LAYOUTS = {
    # also RoBERTa, XLM-R, ELECTRA, MiniLM
    "bert": {"attention": r"\.attention\.output\.dense$", "ffn": r"\.layer\.\d+\.output\.dense$"},
    "distilbert": {"attention": r"\.attention\.out_lin$", "ffn": r"\.ffn\.lin2$"},
    "albert": {"attention": r"\.attention\.dense$", "ffn": r"\.ffn_output$"},
}
PLACEMENTS = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}


@dataclass
class BottleneckConfig:
    reduction_factor: int = 16
    """Bottleneck width = hidden size // reduction_factor."""
    placement: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    modules_to_save: list[str] = field(default_factory=list)
    """Modules outside the encoder that train in full and are saved with the adapters: the task head."""
    base_model_name_or_path: str | None = None

    def __post_init__(self):
        if self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be 1 or more, got {self.reduction_factor}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.non_linearity not in NON_LINEARITIES:
            raise ValueError(f"non_linearity must be one of {', '.join(NON_LINEARITIES)}, got {self.non_linearity!r}")


class BottleneckAdapter(nn.Module):
    """h -> h + W_up f(W_down h)."""

    def __init__(self, hidden_size: int, config: BottleneckConfig):
        super().__init__()
        bottleneck = max(1, hidden_size // config.reduction_factor)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.non_linearity = NON_LINEARITIES[config.non_linearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at the start: the base model's outputs are untouched
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(self.non_linearity(self.down(hidden_states)))


class BottleneckLayer(nn.Module):
    """An output projection followed by its adapter; the projection's own weights stay in `base_layer`."""

    def __init__(self, base_layer: nn.Linear, config: BottleneckConfig):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = BottleneckAdapter(base_layer.out_features, config).to(base_layer.weight.device)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(hidden_states))


def target_names(model: nn.Module, placement: str) -> list[str]:
    """Names of the Linear modules that get an adapter, for the encoder family `model` holds."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for patterns in LAYOUTS.values():
        if any(re.search(patterns["ffn"], name) for name in linear):
            return [name for name in linear if any(re.search(patterns[p], name) for p in PLACEMENTS[placement])]
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise ValueError(
        f"bottleneck adapters know the BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT and ALBERT layouts; "
        f"found none of them in this {model_type} model"
    )


def add_bottleneck_adapters(model: nn.Module, config: BottleneckConfig) -> nn.Module:
    """Insert adapters in place and freeze everything but them and `config.modules_to_save`; returns `model`."""
    targets = target_names(model, config.placement)
    model.requires_grad_(False)
    for name in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, BottleneckLayer(getattr(parent, child_name), config))
    for module in model.modules():
        if isinstance(module, BottleneckAdapter):
            module.requires_grad_(True)
    for name in config.modules_to_save:
        model.get_submodule(name).requires_grad_(True)
    model.bottleneck_config = config
    return model


def remove_bottleneck_adapters(model: nn.Module) -> nn.Module:
    """Put the bare output projections back, in place; returns `model`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BottleneckLayer):
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, module.base_layer)
    model.__dict__.pop("bottleneck_config", None)
    return model


def _saved_keys(model: nn.Module, config: BottleneckConfig) -> list[str]:
    heads = tuple(f"{name}." for name in config.modules_to_save)
    return [key for key in model.state_dict() if ".adapter." in key or key.startswith(heads)]


def save_bottleneck_adapters(model: nn.Module, folder: str | Path) -> None:
    """Write bottleneck_config.json and bottleneck_model.safetensors (adapter and head weights only)."""
    from safetensors.torch import save_file

    config: BottleneckConfig = model.bottleneck_config
    state = model.state_dict()
    weights = {key: state[key].detach().contiguous().cpu() for key in _saved_keys(model, config)}
    folder = Path(folder)
    with fsutil.atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt"})
    fsutil.write_json(folder / CONFIG_NAME, dataclasses.asdict(config))


def load_bottleneck_adapters(model: nn.Module, folder: str | Path) -> nn.Module:
    """Add the adapters saved in `folder` to the base `model` and load their weights and the head's."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = BottleneckConfig(**json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")))
    add_bottleneck_adapters(model, config)
    weights = load_file(str(folder / WEIGHTS_NAME))
    expected = set(_saved_keys(model, config))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(
            f"{folder / WEIGHTS_NAME} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.load_state_dict(weights, strict=False)
    return model


class BottleneckTuning(Tuning):
    """The family interface for bottleneck adapters: the run folder holds bottleneck_config.json and
    bottleneck_model.safetensors (adapters and task head) with config.json (the labels)."""

    config_class = BottleneckConfig
    ADAPTER_CONFIG = CONFIG_NAME

    def usual_learning_rate(self) -> float:
        return 1e-4  # Houlsby et al. and AdapterHub train adapters at 1e-4 to 1e-3

    ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME)
    LOAD_WITH = ("from hf_mha.tuning.bottleneck import load_bottleneck_adapters   # pip install mha-ft",
                 "load_bottleneck_adapters")
    CANNOT_MERGE = ("bottleneck adapters put a non-linearity between their down- and up-projections, so they "
                    "cannot be folded into the base weights")

    def apply(self, model: nn.Module) -> nn.Module:
        config = self.build_config()
        config.modules_to_save = with_task_head(model, config.modules_to_save)
        config.base_model_name_or_path = self.recipe.model.name
        try:
            return add_bottleneck_adapters(model, config)
        except ValueError as exc:
            raise UserError(f"tuning.method {self.recipe.tuning.method}: {exc}") from None

    def save_stock(self, model: nn.Module, out: Path) -> None:
        save_bottleneck_adapters(model, out)
        model.config.save_pretrained(out)

    @classmethod
    def load_adapter(cls, base: nn.Module, folder: Path) -> nn.Module:
        try:
            return load_bottleneck_adapters(base, folder)
        except ValueError as exc:
            raise UserError(str(exc)) from None
