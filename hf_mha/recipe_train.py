"""The `train:` section of a recipe: the keys mha-ft reads itself (`TrainOptions`) and the checks of every other
key, which goes to `transformers.TrainingArguments` as it is."""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import did_you_mean, echo
from .options import check_options, field_hints


class TrainOptions(BaseModel):
    """Keys under `train:` that mha-ft reads itself; every other key goes to TrainingArguments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many evaluations without improvement of the best metric (EarlyStoppingCallback)."""
    early_stopping_threshold: float = Field(0.0, ge=0)
    """The least change of the best metric that counts as an improvement."""
    class_weights: Any = None
    """Weighted cross-entropy: `balanced` (n / (k * count) per label; BCE pos_weight for multi-label) or a
    weight per label name (others 1)."""
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0)
    """Focal loss's focusing parameter: (1 - p_true)^gamma scales each example's loss."""
    lazy_embeddings: bool = True
    """Row-sparse (lazy) AdamW updates of the word embeddings: only the rows a step's batches touch
    (hf_mha.speedups.LazyEmbeddingAdamW). Applies to full fine-tuning with AdamW on one process."""
    fast_dropout: bool = True
    """Dropout masks on CPU from 15-bit random numbers, four to a 64-bit draw, instead of one double each
    (hf_mha.speedups.FastDropout): the same distribution with p rounded to a multiple of 2^-15."""

    @property
    def own_loss(self) -> bool:
        """Whether the loss is ours (class weights or focal) rather than the model's."""
        return self.class_weights is not None or self.loss != "cross_entropy"

    @field_validator("class_weights")
    @classmethod
    def _balanced_or_weights(cls, value):
        # Checked by hand: pydantic's errors for a Literal-or-dict union name the union branch, not the problem.
        wanted = "balanced, or a weight > 0 per label, e.g. {positive: 5.0}"
        if value is None or value == "balanced":
            return value
        if not isinstance(value, dict) or not value:
            raise ValueError(f"give {wanted}")
        for label, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise ValueError(f"the weight of {label!r} must be a number > 0; give {wanted}")
        return {label: float(weight) for label, weight in value.items()}


#: The `train:` keys of TrainOptions, kept out of TrainingArguments.
OWN_TRAIN_KEYS = tuple(TrainOptions.model_fields)
#: TrainingArguments keys that also take `auto`, which mha-ft resolves for the machine (hf_mha.speedups).
AUTO_KEYS = ("bf16",)


# --------------------------------------------------------------------------- train: -> TrainingArguments


@functools.cache
def training_argument_hints() -> dict[str, Any]:
    from transformers import TrainingArguments

    return field_hints(TrainingArguments)


def check_training_arguments(values: dict[str, Any]) -> dict[str, Any]:
    if "output_dir" in values:
        raise ValueError("train.output_dir: set the run folder with the top-level key output_dir")
    own = {key: values[key] for key in values if key in OWN_TRAIN_KEYS}
    try:
        own = TrainOptions.model_validate(own).model_dump(include=set(own))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"train.{'.'.join(map(str, error['loc']))}: {error['msg'].removeprefix('Value error, ')} "
                         f"(got {echo(error.get('input'))})") from None
    hints = training_argument_hints()
    rest = {key: value for key, value in values.items() if key not in OWN_TRAIN_KEYS}
    auto = {key: rest.pop(key) for key in AUTO_KEYS if rest.get(key) == "auto"}  # resolved by training_arguments
    for key in AUTO_KEYS:
        if isinstance(rest.get(key), str) and rest[key].lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"train.{key} must be true, false or auto, got {echo(rest[key])}")
    known = [*hints, *OWN_TRAIN_KEYS]
    checked = check_options(rest, hints, "train", lambda key: f"unknown TrainingArguments key{did_you_mean(key, known)}")
    checked |= auto
    if checked.get("bf16") is True and checked.get("fp16") is True:
        raise ValueError("train.bf16 and train.fp16 are both true; pick one precision (bf16: auto picks for you)")
    for key, (holds, wanted) in TRAIN_VALUE_RULES.items():
        value = checked.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not holds(value):
            raise ValueError(f"train.{key} must be {wanted}, got {echo(value)}")
    epochs, steps = checked.get("num_train_epochs", 1), checked.get("max_steps", -1)
    if isinstance(epochs, (int, float)) and epochs <= 0 and not (isinstance(steps, int) and steps > 0):
        raise ValueError("train.num_train_epochs must be > 0, or set train.max_steps > 0 to train for that many steps")
    return checked | own


def _positive(value) -> bool:
    return value > 0


def _at_least_zero(value) -> bool:
    return value >= 0


#: Values TrainingArguments takes without complaint but that cannot train (a zero batch, a zero or negative
#: learning rate) or that fail only later, deep inside a step (a negative seed, a save every 0 steps).
TRAIN_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (_positive, "> 0"),
    "per_device_train_batch_size": (_positive, "at least 1"),
    "per_device_eval_batch_size": (_positive, "at least 1"),
    "gradient_accumulation_steps": (_positive, "at least 1"),
    "eval_accumulation_steps": (_positive, "at least 1"),
    "max_steps": (lambda v: v == -1 or v > 0, "> 0, or -1 to train for num_train_epochs"),
    "max_grad_norm": (_at_least_zero, "a number >= 0 (0 turns clipping off)"),
    "weight_decay": (_at_least_zero, ">= 0"),
    "warmup_steps": (_at_least_zero, ">= 0"),
    "logging_steps": (_positive, "> 0"),
    "save_steps": (_positive, "> 0"),
    "eval_steps": (_positive, "> 0"),
    "save_total_limit": (_positive, "at least 1, or null to keep every checkpoint"),
    "seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1"),
    "data_seed": (lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (_positive, "> 0"),
    "label_smoothing_factor": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dataloader_num_workers": (_at_least_zero, ">= 0"),
}


