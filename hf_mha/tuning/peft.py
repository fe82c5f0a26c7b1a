"""PEFT methods: `lora`, `adalora`, `ia3`, `loha`, `lokr`, `prefix_tuning`, `prompt_tuning`, `vera`, `boft`, ...
(every key of peft's PEFT_TYPE_TO_CONFIG_MAPPING), with the method's PEFT config fields as options.

mha-ft fills in what depends on the recipe and the model:

- `task_type` from the recipe's task;
- `target_modules` presets, by encoder family: `auto` (W^Q, W^V; for IA3: keys, values and the feed-forward
  output, as in the IA3 paper), `qkv`, `attention` (W^Q, W^K, W^V, W^O); PEFT's own `all-linear`, a list of
  names or a regex work as in PEFT. Our attention keeps the stock module names, so the same targets apply to it;
- `modules_to_save` always holds the task head (classifier, pre_classifier, qa_outputs..., and the pooler that
  feeds BERT's and ALBERT's classifier): a head left out of it would stay frozen at its random init and be
  missing from the saved adapter (peft#310);
- AdaLoRA's `total_step`, from the Trainer's step count, and its per-step rank update (`AdaLoraSchedule`).

The run folder holds PEFT's adapter_config.json and adapter_model.safetensors (adapter and head) with
config.json (the labels); the base weights are `recipe.model.name`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from peft import PeftModel, PeftModelForQuestionAnswering, PromptLearningConfig
from peft.utils.constants import CONFIG_NAME as PEFT_CONFIG_NAME
from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME
from torch import nn
from transformers import TrainerCallback

from ..errors import UserError, did_you_mean
from .base import Tuning, with_task_head
from .full import FullConfig

ADALORA = "adalora"
# Methods that default to target_modules: auto. Other PEFT methods keep PEFT's default targets per model type.
AUTO_TARGETS = ("lora", "adalora", "ia3", "loha", "lokr")
TASK_TYPES = {
    "text-classification": "SEQ_CLS", "token-classification": "TOKEN_CLS", "question-answering": "QUESTION_ANS",
}


def config_classes() -> dict[str, type]:
    """PEFT's config class of every method, by its lower-case PEFT name."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(peft_type.value).lower(): cls for peft_type, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


class PeftTuning(Tuning):
    ADAPTER_CONFIG = PEFT_CONFIG_NAME
    ADAPTER_FILES = (PEFT_CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME)
    LOAD_WITH = ("from peft import PeftModel", "PeftModel.from_pretrained")

    def __init__(self, recipe, method, options):
        self.config_class = config_classes()[method]
        super().__init__(recipe, method, options)

    @property
    def is_prompt_learning(self) -> bool:
        return issubclass(self.config_class, PromptLearningConfig)

    def usual_learning_rate(self) -> float:
        # Virtual tokens start from nothing and want ~1e-2; LoRA, IA3 and the other weight adapters ~1e-4 to 1e-3.
        return 1e-3 if self.is_prompt_learning else 1e-4

    def unknown_option(self, key: str, hints: dict[str, Any]) -> str:
        if key in FullConfig.__dataclass_fields__:
            return f"an option of method full, not of {self.method}"
        return super().unknown_option(key, hints)

    def with_defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        if self.is_prompt_learning:
            options.setdefault("num_virtual_tokens", 20)  # PEFT has no default and fails late without one
        if self.method in AUTO_TARGETS:
            options.setdefault("target_modules", "auto")
        if self.method == ADALORA and "total_step" not in options:
            # A valid stand-in until the Trainer knows the step count (AdaLoraSchedule.on_train_begin).
            options["total_step"] = options.get("tinit", 0) + options.get("tfinal", 0) + 1
        return options

    def build_config(self, options: dict[str, Any] | None = None, **extra: Any):
        return super().build_config(options, task_type=TASK_TYPES[self.recipe.task], **extra)

    def check(self) -> None:
        self.build_config()
        if not self.is_prompt_learning:
            return
        task = self.recipe.task
        if task == "question-answering":
            reason = "PEFT's question-answering model fails with prompt-learning methods"
        elif task == "token-classification" and self.method != "prefix_tuning":
            reason = "its virtual tokens shift the per-token outputs against the labels"
        else:
            reason = None
        if reason:
            raise UserError(
                f"tuning.method {self.recipe.tuning.method}: {self.method} does not support {task} ({reason}); "
                "use lora or bottleneck"
            )
        if self.method == "prefix_tuning" and self.recipe.model.attention == "mha":
            raise UserError(
                "tuning.method prefix: prefix tuning feeds past key/values, which our attention does not take; "
                "set model.attention=stock or use prompt tuning"
            )

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        options = dict(self.options)
        if self.is_prompt_learning:
            options |= self._prompt_learning_sizes(model)
        options |= resolve_targets(model, self.method, options)
        options["modules_to_save"] = with_task_head(model, options.get("modules_to_save"))
        config = self.build_config(options)
        try:
            return hand_on_every_input(get_peft_model(model, config))
        except (ValueError, TypeError, NotImplementedError) as exc:
            hint = ""
            if "target_modules" in self.config_class.__dataclass_fields__ and "target_modules" not in options:
                hint = "; tuning.target_modules may help: auto, qkv, attention, all-linear or module names"
            raise UserError(
                f"tuning.method {self.method}: PEFT cannot apply it to this model: {str(exc).splitlines()[0]}{hint}"
            ) from None

    def _prompt_learning_sizes(self, model: nn.Module) -> dict[str, Any]:
        """The sizes PEFT needs, read from the model. PEFT reads them from config.to_dict(), which misses
        DistilBERT's aliased names (dim, n_layers, n_heads). Virtual tokens live in the input embedding space
        (ALBERT's is narrower than its hidden size); prefixes are keys and values, in the hidden size."""
        config = model.config
        if self.method == "prefix_tuning":
            inputs = [inspect.signature(forward).parameters for forward in (model.forward, model.base_model.forward)]
            if not any("past_key_values" in names for names in inputs):
                if any("cache" in names for names in inputs):
                    import transformers

                    raise UserError(
                        f"tuning.method prefix: transformers {transformers.__version__} names the past key/values "
                        "`cache`, and PEFT looks for `past_key_values`; pip install 'transformers<5.24', or use lora"
                    )
                raise UserError(
                    f"tuning.method prefix: prefix tuning feeds past key/values, which {type(model).__name__} does "
                    "not take; use prompt tuning, lora or bottleneck"
                )
            token_dim = config.hidden_size
        else:
            token_dim = model.get_input_embeddings().embedding_dim
        sizes = {"token_dim": token_dim, "num_layers": config.num_hidden_layers,
                 "num_attention_heads": config.num_attention_heads}
        return {key: value for key, value in sizes.items() if self.options.get(key) is None}

    def callbacks(self) -> list[TrainerCallback]:
        if self.method == ADALORA:
            return [AdaLoraSchedule(fill_total_step="total_step" not in self.given)]
        return []

    def save_stock(self, model: nn.Module, out: Path) -> None:
        model.peft_config[model.active_adapter].base_model_name_or_path = self.recipe.model.name
        model.save_pretrained(out)
        model.get_base_model().config.save_pretrained(out)

    @classmethod
    def load_adapter(cls, base: nn.Module, folder: Path) -> nn.Module:
        return hand_on_every_input(PeftModel.from_pretrained(base, str(folder)))


# --------------------------------------------------------------------------- target modules

# Short names of W^Q, W^K, W^V, W^O and the feed-forward output per encoder family, in the order tried.
# BERT's "output.dense" also matches the attention's output.dense: that is PEFT's own IA3 default for BERT.
ATTENTION_LAYOUTS = (
    ("query", "key", "value", "attention.output.dense", "output.dense"),  # BERT, RoBERTa, XLM-R, ELECTRA, MiniLM
    ("query", "key", "value", "attention.dense", "ffn_output"),  # ALBERT
    ("q_lin", "k_lin", "v_lin", "out_lin", "lin2"),  # DistilBERT
)
TARGET_PRESETS = {"auto": (0, 2), "qkv": (0, 1, 2), "attention": (0, 1, 2, 3)}


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith(f".{target}")


def _linear_names(model: nn.Module) -> list[str]:
    """The encoder's Linear modules (the task head's are trained in full, never adapted)."""
    heads = with_task_head(model, None)
    head_prefixes = tuple(f"{h}." for h in heads)
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in heads and not name.startswith(head_prefixes)
    ]


def _short_names(names: list[str]) -> str:
    return ", ".join(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))


def resolve_targets(model: nn.Module, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Turn a target_modules preset into module names, and check that named targets exist."""
    targets = options.get("target_modules")
    if targets is None or targets == "all-linear":
        return {}
    linear = _linear_names(model)
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if isinstance(targets, str) and targets in TARGET_PRESETS:
        layout = next((names for names in ATTENTION_LAYOUTS if all(
            any(_matches(n, target) for n in linear) for target in names)), None)
        if layout is None:
            raise UserError(
                f"tuning.target_modules: {targets} does not know the attention of this {model_type} model; "
                f"list the modules to adapt, from: {_short_names(linear)}"
            )
        if targets == "auto" and method == "ia3":
            resolved = {"target_modules": [layout[1], layout[2], layout[4]]}
            if "feedforward_modules" not in options:
                resolved["feedforward_modules"] = [layout[4]]
            return resolved
        return {"target_modules": [layout[i] for i in TARGET_PRESETS[targets]]}
    if isinstance(targets, list):
        for target in targets:
            if not any(_matches(name, target) for name in linear):
                raise UserError(
                    f"tuning.target_modules: '{target}' is not a module of this {model_type} model"
                    f"{did_you_mean(target, [n.rsplit('.', 1)[-1] for n in linear])}; "
                    f"its linear modules: {_short_names(linear)}"
                )
    return {}


# --------------------------------------------------------------------------- PEFT's question-answering model


class QuestionAnsweringPeftModel(PeftModelForQuestionAnswering):
    """PEFT (0.21) makes question-answering models a PeftModelForQuestionAnswering, whose forward takes
    `token_type_ids` and `position_ids` by name and, for every method but prompt learning, never hands them on:
    BERT then reads question and context as one segment, in training and in evaluation, and a merged export, which
    does get them, computes something else than the run did. PeftModel's own forward hands every input on; prompt
    learning, the one case the QA forward is written for, is not offered for QA (see `PeftTuning.check`)."""

    forward = PeftModel.forward


def hand_on_every_input(model):
    if type(model) is PeftModelForQuestionAnswering:
        model.__class__ = QuestionAnsweringPeftModel
    return model


# --------------------------------------------------------------------------- AdaLoRA's rank schedule


class AdaLoraSchedule(TrainerCallback):
    """AdaLoRA re-allocates ranks from gradient statistics after every optimizer step, before the gradients are
    zeroed (`update_and_allocate`), on a budget schedule that needs the run's total number of steps.

    Checkpoints keep AdaLoRA's tensors at full rank, pruned ranks as zeros. PEFT would save them cut down to the
    config's rank pattern, and the Trainer loads a checkpoint (to resume, or for load_best_model_at_end) into the
    live full-rank adapter, where cut tensors do not fit. So the pattern leaves the config while a checkpoint is
    written, and comes back for the steps that follow; after the last one it stays out, and the run's adapter is
    saved at full rank too.
    """

    def __init__(self, fill_total_step: bool):
        self.fill_total_step = fill_total_step
        self.rank_pattern = None

    @staticmethod
    def _config(model):
        tuner = model.base_model
        return tuner.peft_config[tuner.trainable_adapter_name]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        tuner, config = model.base_model, self._config(model)
        if self.fill_total_step:
            if config.tinit >= state.max_steps - config.tfinal:
                raise UserError(
                    f"tuning.tinit ({config.tinit}) + tuning.tfinal ({config.tfinal}) leave no AdaLoRA budgeting "
                    f"phase in {state.max_steps} training steps; lower them or train longer"
                )
            tuner.rankallocator.set_total_step(state.max_steps)
        if state.global_step > config.total_step - config.tfinal and config.rank_pattern is None:
            # Resumed after the budget was fixed: the pattern is in the weights, as the ranks masked to zero.
            adapter = tuner.trainable_adapter_name
            config.rank_pattern = {
                name: (param != 0).view(-1).tolist()
                for name, param in tuner.model.named_parameters() if f"lora_E.{adapter}" in name
            }

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._hide_rank_pattern_before_saving(control, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._hide_rank_pattern_before_saving(control, model)

    def _hide_rank_pattern_before_saving(self, control, model) -> None:
        config = self._config(model)
        if control.should_save and config.rank_pattern is not None:
            self.rank_pattern, config.rank_pattern = config.rank_pattern, None

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.global_step < state.max_steps and self.rank_pattern is not None:
            self._config(model).rank_pattern = self.rank_pattern
