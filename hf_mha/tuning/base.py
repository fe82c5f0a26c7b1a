"""What every tuning family has: the same small interface, the option checks, and the task head it always trains.

A family (`full.py`, `peft.py`, `bottleneck.py`) is a `Tuning` subclass, built once per recipe by
`hf_mha.tuning.resolve`. Building it checks the method's options, before any model or data is loaded; then:

- `apply(model)` returns the model to train (frozen parts frozen, adapters added);
- `callbacks()` are Trainer callbacks the method needs; `optimizer(model, args)` is the Trainer's
  `optimizer_cls_and_kwargs`, or None for the Trainer's own;
- `save(model, out)` writes what trained into a run folder, in the stock attention layout;
- `load_adapter(base, folder)` puts a saved adapter back on a freshly loaded base model (classmethod; the
  folder's files, found by `ADAPTER_CONFIG`, say which family saved it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..errors import UserError, did_you_mean
from ..models import stock_layout
from ..options import check_options, field_hints
from ..recipe import Recipe

# Config fields that mha-ft sets itself, from the recipe's task and model.
MANAGED = (
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
)


class Tuning:
    """A recipe's tuning section, resolved and checked: `method` (the family's name for it) and `options`."""

    #: The config dataclass whose fields are the method's options (PEFT families set it per method).
    config_class: ClassVar[type]
    #: The file that marks this family's adapter in a folder; None for a whole model.
    ADAPTER_CONFIG: ClassVar[str | None] = None
    #: The files of a saved adapter, and how plain Python loads them (an import, a function of base and folder).
    ADAPTER_FILES: ClassVar[tuple[str, ...]] = ()
    LOAD_WITH: ClassVar[tuple[str, str]] = ("", "")
    #: Why `mha-ft export` cannot fold the adapter into the base weights, for families that never can.
    CANNOT_MERGE: ClassVar[str | None] = None

    def __init__(self, recipe: Recipe, method: str, options: dict[str, Any]):
        self.recipe = recipe
        self.method = method
        self.given = dict(options)
        self.options = self.with_defaults(self._checked(options))
        self.check()

    # -- options
    def _checked(self, options: dict[str, Any]) -> dict[str, Any]:
        for key in options:
            if key in MANAGED:
                raise UserError(f"tuning.{key}: set by mha-ft (from the recipe's task and model); remove it")
        hints = field_hints(self.config_class, exclude=MANAGED)
        try:
            return check_options(options, hints, "tuning", lambda key: self.unknown_option(key, hints))
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def unknown_option(self, key: str, hints: dict[str, Any]) -> str:
        return f"not an option of method {self.method}{did_you_mean(key, hints)}; options: {', '.join(hints)}"

    def with_defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options with what the family fills in when the recipe leaves it out."""
        return options

    def build_config(self, options: dict[str, Any] | None = None, **extra: Any):
        """The method's config object from `options` (default: the checked options) and `extra` (what mha-ft
        sets)."""
        try:
            return self.config_class(**(self.options if options is None else options), **extra)
        except (TypeError, ValueError) as exc:
            raise UserError(f"tuning ({self.method}): {str(exc).splitlines()[0]}") from None

    def usual_learning_rate(self) -> float | None:
        """The low end of the learning rates this method usually trains at; None where full fine-tuning's apply."""
        return None

    def check(self) -> None:
        """Everything about the method that can be judged without a model: by default, that its config builds."""
        self.build_config()

    # -- the interface
    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def callbacks(self) -> list:
        return []

    def optimizer(self, model: nn.Module, args) -> tuple[type, dict[str, Any]] | None:
        return None

    def save(self, model: nn.Module, out: Path) -> None:
        with stock_layout(model):
            self.save_stock(model, out)

    def save_stock(self, model: nn.Module, out: Path) -> None:
        model.save_pretrained(out)

    @classmethod
    def load_adapter(cls, base: nn.Module, folder: Path) -> nn.Module:
        raise NotImplementedError


# --------------------------------------------------------------------------- the task head, counts, layers


def task_head_modules(model: nn.Module) -> list[str]:
    """The task head: the task model's own children that hold weights (outside the encoder), and the encoder's
    pooler when there is one (BERT, ALBERT classification). The pooler only feeds the classifier; left frozen,
    its tanh layer from pre-training would sit between the encoder and a head that cannot adapt it."""
    base = model.base_model_prefix
    heads = [name for name, child in model.named_children() if name != base and any(True for _ in child.parameters())]
    pooler = getattr(model.base_model, "pooler", None)
    if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
        heads.append(f"{base}.pooler")
    return heads


def with_task_head(model: nn.Module, modules: list[str] | None) -> list[str]:
    """`modules` (a method's modules_to_save) with the task head first, each name once."""
    heads = task_head_modules(model)
    return heads + [m for m in modules or [] if m not in heads]


def count_trainable(model: nn.Module) -> dict[str, float]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / max(total, 1),
    }
