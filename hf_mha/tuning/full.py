"""`tuning.method: full`: every weight trains, with optional freezing and layer-wise learning-rate decay.

Options: `freeze_embeddings`, `freeze_layers` (the first N encoder layers), `layerwise_lr_decay` (the head keeps
the learning rate, each layer below gets `decay` times the one above). The run folder holds the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UserError
from ..models import encoder_layers
from .base import Tuning


@dataclass
class FullConfig:
    """Options of full fine-tuning."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0
    layerwise_lr_decay: float | None = None

    def __post_init__(self):
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be 0 or more, got {self.freeze_layers}")
        if self.layerwise_lr_decay is not None and not 0 < self.layerwise_lr_decay <= 1:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")


class FullTuning(Tuning):
    config_class = FullConfig

    def apply(self, model: nn.Module) -> nn.Module:
        config = self.build_config()
        if config.freeze_embeddings:
            embeddings = getattr(model.base_model, "embeddings", None)
            if not isinstance(embeddings, nn.Module):
                raise UserError(f"tuning.freeze_embeddings: no embeddings module found in {type(model).__name__}")
            embeddings.requires_grad_(False)
        if config.freeze_layers:
            layers = encoder_layers(model, "freeze_layers")
            if config.freeze_layers > len(layers):
                raise UserError(
                    f"tuning.freeze_layers: {config.freeze_layers} is more than the model's {len(layers)} layers"
                )
            for layer in layers[: config.freeze_layers]:
                layer.requires_grad_(False)
        return model

    def optimizer(self, model: nn.Module, args) -> tuple[type, dict[str, Any]] | None:
        """Per-layer learning rates for `layerwise_lr_decay`; None (the Trainer's own optimizer) without it."""
        decay = self.build_config().layerwise_lr_decay
        if decay is None or decay == 1:
            return None
        return layerwise_optimizer(model, args, decay)


def layerwise_optimizer(model: nn.Module, args, decay: float) -> tuple[type, dict[str, Any]]:
    """The Trainer's optimizer with one param group per depth: the head and pooler at the base learning rate,
    encoder layer i (of L) at lr * decay^(L - i), the embeddings at lr * decay^(L + 1).

    Matrices get weight decay; biases and LayerNorm weights (vectors) do not, as in the Trainer's default.
    """
    from transformers import Trainer

    optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    layers = encoder_layers(model, "layerwise_lr_decay")
    top = len(layers) + 1
    depth_of = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = depth_of.get(id(param), 0 if "embeddings" in name else top)
        groups.setdefault((depth, param.ndim >= 2), []).append(param)
    param_groups = [
        {"params": params, "lr": args.learning_rate * decay ** (top - depth),
         "weight_decay": args.weight_decay if decays else 0.0}
        for (depth, decays), params in sorted(groups.items())
    ]
    return optimizer_class, {**optimizer_kwargs, "params": param_groups}
