"""What trains, and how a tuned model is saved and reloaded: `resolve(recipe)` once, then one interface.

`tuning.method` is one of:

- `full` (`full.py`): every weight trains; freezing and layer-wise learning-rate decay as options;
- a PEFT method by its PEFT name (`peft.py`): `lora`, `adalora`, `ia3`, `loha`, `lokr`, `prefix_tuning`,
  `prompt_tuning`, `vera`, `boft`, ..., plus the short names `dora` (LoRA with use_dora), `prefix` and `prompt`;
- `bottleneck` or `adapter` (`bottleneck.py`): our Houlsby/Pfeiffer bottleneck adapters (PEFT has none).

Options sit beside `method` in the recipe and are checked against the method's config dataclass when the
recipe is resolved, before any model is loaded. Every family has the interface of `base.Tuning`: apply,
callbacks, optimizer, save, load_adapter.

Run folder: `full` saves the whole model; the others save only what trained, with config.json (the labels),
and take their base weights from `recipe.model.name` (`load_tuned_model`). Always in the stock attention layout,
so plain transformers (+ peft) can load it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UserError, did_you_mean
from ..models import load_error, load_model, load_model_folder
from ..recipe import Recipe
from ..tasks import get_task
from .base import Tuning, count_trainable, task_head_modules
from .bottleneck import BottleneckTuning
from .full import FullTuning
from .peft import PeftTuning, config_classes

FULL, BOTTLENECK = "full", "bottleneck"
SHORT_NAMES = {
    "dora": ("lora", {"use_dora": True}), "prefix": ("prefix_tuning", {}), "prompt": ("prompt_tuning", {}),
    "adapter": (BOTTLENECK, {}),
}
DOCUMENTED = ("full", "lora", "dora", "adalora", "ia3", "prefix", "prompt", "loha", "lokr", "bottleneck", "adapter")
#: Families that save an adapter beside the task head rather than the whole model.
ADAPTER_FAMILIES: tuple[type[Tuning], ...] = (PeftTuning, BottleneckTuning)
#: The subfolder of an unmerged export (`mha-ft export`) holding the adapter; the folder holds the base weights.
EXPORTED_ADAPTER = "adapter"

__all__ = [
    "EXPORTED_ADAPTER", "Tuning", "adapter_family", "count_trainable", "load_tuned_model", "resolve",
    "task_head_modules",
]


def resolve(recipe: Recipe) -> Tuning:
    """The recipe's tuning section as a checked `Tuning`: raises UserError on an unknown method, option or option
    value, or a method the task or attention cannot take."""
    given = recipe.tuning.method
    method, implied = SHORT_NAMES.get(given.lower(), (given.lower(), {}))
    options = {**(recipe.tuning.model_extra or {}), **implied}
    if method == FULL:
        return FullTuning(recipe, method, options)
    if method == BOTTLENECK:
        return BottleneckTuning(recipe, method, options)
    peft_methods = config_classes()
    if method in peft_methods:
        return PeftTuning(recipe, method, options)
    others = sorted(set(peft_methods) - set(DOCUMENTED))
    hint = did_you_mean(given.lower(), DOCUMENTED) or did_you_mean(given.lower(), peft_methods)
    raise UserError(
        f"tuning.method: '{given}' is not a method{hint}; "
        f"choose {', '.join(DOCUMENTED)}, or another PEFT method: {', '.join(others)}"
    )


def adapter_family(folder: str | Path) -> type[Tuning] | None:
    """The family whose adapter `folder` holds, or None for a complete model."""
    folder = Path(folder)
    return next((family for family in ADAPTER_FAMILIES if (folder / family.ADAPTER_CONFIG).is_file()), None)


def load_tuned_model(recipe: Recipe, model_dir: str | Path) -> nn.Module:
    """What a family's `save` (or an unmerged `export`) wrote, ready for inference, in the stock layout (with
    pruned heads where the run was pruned: `hf_mha.attention.pruning`).

    A run folder holds the adapter and takes its base weights from `recipe.model.name`; an export of a method
    that cannot merge holds the base weights itself and the adapter in its EXPORTED_ADAPTER subfolder.
    """
    model_class = get_task(recipe.task).model_class
    folder = Path(model_dir)
    family = adapter_family(folder / EXPORTED_ADAPTER)
    if family is not None:
        base, adapter_dir = load_model_folder(model_class, folder), folder / EXPORTED_ADAPTER
    elif (family := adapter_family(folder)) is not None:
        base, adapter_dir = load_base_model(recipe, model_class, folder), folder
    else:
        return load_model_folder(model_class, folder)
    return family.load_adapter(base, adapter_dir)


def load_base_model(recipe: Recipe, model_class, adapter_dir: Path) -> nn.Module:
    """The task model with base weights `recipe.model.name` and the labels of the config.json in `adapter_dir`.
    The base may be a run whose heads were pruned (`mha-ft heads --prune`)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(adapter_dir), trust_remote_code=recipe.model.trust_remote_code)
    except OSError as exc:
        raise load_error("the labels of the adapter", str(adapter_dir), exc) from None
    return load_model(recipe, model_class, config=config, what=f"the base model for the adapter in {adapter_dir}")
