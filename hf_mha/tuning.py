"""What trains, and how a tuned model is saved and reloaded.

`tuning.method` is one of:

- `full`: every weight trains. Options: `freeze_embeddings`, `freeze_layers` (the first N encoder layers),
  `layerwise_lr_decay` (the head keeps the learning rate, each layer below gets `decay` times the one above).
- a PEFT method, by its PEFT name: `lora`, `adalora`, `ia3`, `loha`, `lokr`, `prefix_tuning`, `prompt_tuning`,
  `vera`, `boft`, ... (every key of peft's PEFT_TYPE_TO_CONFIG_MAPPING), plus the short names `dora` (LoRA
  with use_dora), `prefix` and `prompt`. Options are the fields of the method's PEFT config class.
- `adapter`: our bottleneck adapter (`hf_mha.adapters`; PEFT has none).

Options sit beside `method` in the recipe and are checked against the method's config dataclass before any
model is loaded. mha-ft fills in what depends on the recipe and the model:

- `task_type` from the recipe's task;
- `target_modules` presets, by encoder family: `auto` (W^Q, W^V; for IA3: keys, values and the feed-forward
  output, as in the IA3 paper), `qkv`, `attention` (W^Q, W^K, W^V, W^O); PEFT's own `all-linear`, a list of
  names or a regex work as in PEFT. Our attention (`model.attention: mha`) keeps the stock module names, so the
  same targets apply to it;
- `modules_to_save` always holds the task head (classifier, pre_classifier, qa_outputs..., and the pooler that
  feeds BERT's and ALBERT's classifier): a head left out of it would stay frozen at its random init and be
  missing from the saved adapter (peft#310);
- AdaLoRA's `total_step`, from the Trainer's step count, and its per-step rank update (`tuning_callbacks`).

`training.py` builds the Trainer with `callbacks=[..., *tuning_callbacks(recipe)]` and
`optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, recipe, args)` (per-layer learning rates).

Run folder: `full` saves the whole model. Adapter methods save only what trained (PEFT's adapter_config.json
and adapter_model.safetensors, or bottleneck_config.json and bottleneck_model.safetensors) with config.json
(the labels); the base weights are `recipe.model.name`, loaded again by `load_tuned_model`. Always in the stock
attention layout, so plain transformers + peft can load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel, PeftModelForQuestionAnswering
from torch import nn
from transformers import TrainerCallback

from .errors import UserError
from .recipe import Recipe, did_you_mean

FULL = "full"
ADAPTER = "adapter"
ADALORA = "adalora"
SHORT_NAMES = {"dora": ("lora", {"use_dora": True}), "prefix": ("prefix_tuning", {}), "prompt": ("prompt_tuning", {})}
DOCUMENTED = ("full", "lora", "dora", "adalora", "ia3", "prefix", "prompt", "loha", "lokr", "adapter")
# Methods that default to target_modules: auto. Other PEFT methods keep PEFT's default targets per model type.
AUTO_TARGETS = ("lora", "adalora", "ia3", "loha", "lokr")
TASK_TYPES = {
    "text-classification": "SEQ_CLS", "token-classification": "TOKEN_CLS", "question-answering": "QUESTION_ANS",
}
# PeftConfig fields that mha-ft sets itself.
MANAGED = (
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
)


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


# --------------------------------------------------------------------------- method and options


def _config_classes() -> dict[str, type]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from .adapters import BottleneckConfig

    peft = {str(peft_type.value).lower(): cls for peft_type, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    return {FULL: FullConfig, ADAPTER: BottleneckConfig, **peft}


@dataclass
class Method:
    """A recipe's tuning section, resolved: PEFT name, config class and the options as given."""

    name: str
    config_class: type
    options: dict[str, Any]

    @property
    def is_peft(self) -> bool:
        return self.name not in (FULL, ADAPTER)

    @property
    def is_prompt_learning(self) -> bool:
        from peft import PromptLearningConfig

        return issubclass(self.config_class, PromptLearningConfig)


def resolve_method(recipe: Recipe) -> Method:
    classes = _config_classes()
    given = recipe.tuning.method
    name, implied = SHORT_NAMES.get(given.lower(), (given.lower(), {}))
    if name not in classes:
        others = sorted(set(classes) - set(DOCUMENTED))
        hint = did_you_mean(given.lower(), DOCUMENTED) or did_you_mean(given.lower(), classes)
        raise UserError(
            f"tuning.method: '{given}' is not a method{hint}; "
            f"choose {', '.join(DOCUMENTED)}, or another PEFT method: {', '.join(others)}"
        )
    options = {**(recipe.tuning.model_extra or {}), **implied}
    return Method(name, classes[name], options)


def _fields(config_class: type) -> dict[str, Any]:
    """The options a user may set, with their type hints."""
    hints = typing.get_type_hints(config_class)
    return {
        f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if f.init and f.name not in MANAGED
    }


def _accepts(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_accepts(v, args[0]) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True  # callables, tensors and the like: the config class itself judges those


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"list of {_describe(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any) -> Any:
    """YAML reads `1e-3` as a string: turn such strings into the number the field wants."""
    if isinstance(value, str) and not _accepts(value, hint):
        for kind in (int, float):
            try:
                number = kind(value)
            except ValueError:
                continue
            if _accepts(number, hint):
                return number
    return value


def _checked_options(method: Method) -> dict[str, Any]:
    fields = _fields(method.config_class)
    checked = {}
    for key, value in method.options.items():
        if key in MANAGED:
            raise UserError(f"tuning.{key}: set by mha-ft (from the recipe's task and model); remove it")
        if key not in fields:
            if method.name != FULL and key in _fields(FullConfig):
                raise UserError(f"tuning.{key}: an option of method full, not of {method.name}")
            raise UserError(
                f"tuning.{key}: not an option of method {method.name}{did_you_mean(key, fields)}; "
                f"options: {', '.join(fields)}"
            )
        value = _coerce(value, fields[key])
        if not _accepts(value, fields[key]):
            raise UserError(f"tuning.{key} must be {_describe(fields[key])}, got {value!r}")
        checked[key] = value
    return checked


def _build_config(method: Method, options: dict[str, Any]):
    try:
        return method.config_class(**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"tuning ({method.name}): {str(exc).splitlines()[0]}") from None


def _with_defaults(method: Method, options: dict[str, Any]) -> dict[str, Any]:
    options = dict(options)
    if method.is_prompt_learning:
        options.setdefault("num_virtual_tokens", 20)  # PEFT has no default and fails late without one
    if method.name in AUTO_TARGETS:
        options.setdefault("target_modules", "auto")
    if method.name == ADALORA and "total_step" not in options:
        # A valid stand-in until the Trainer knows the step count (AdaLoraSchedule.on_train_begin).
        options["total_step"] = options.get("tinit", 0) + options.get("tfinal", 0) + 1
    return options


def check_tuning(recipe: Recipe) -> None:
    """Reject an unknown method, option or option value before any model is loaded."""
    method = resolve_method(recipe)
    options = _with_defaults(method, _checked_options(method))
    _build_config(method, {**options, **({"task_type": TASK_TYPES[recipe.task]} if method.is_peft else {})})
    if method.is_prompt_learning:
        if recipe.task == "question-answering":
            reason = "PEFT's question-answering model fails with prompt-learning methods"
        elif recipe.task == "token-classification" and method.name != "prefix_tuning":
            reason = "its virtual tokens shift the per-token outputs against the labels"
        else:
            reason = None
        if reason:
            raise UserError(
                f"tuning.method {recipe.tuning.method}: {method.name} does not support {recipe.task} ({reason}); "
                "use lora or adapter"
            )
        if method.name == "prefix_tuning" and recipe.model.attention == "mha":
            raise UserError(
                "tuning.method prefix: prefix tuning feeds past key/values, which our attention does not take; "
                "set model.attention=stock or use prompt tuning"
            )


# --------------------------------------------------------------------------- what trains


def head_modules(model: nn.Module) -> list[str]:
    """The task head: the task model's own children that hold weights (outside the encoder), and the encoder's
    pooler when there is one (BERT, ALBERT classification). The pooler only feeds the classifier; left frozen,
    its tanh layer from pre-training would sit between the encoder and a head that cannot adapt it."""
    base = model.base_model_prefix
    heads = [name for name, child in model.named_children() if name != base and any(True for _ in child.parameters())]
    pooler = getattr(model.base_model, "pooler", None)
    if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
        heads.append(f"{base}.pooler")
    return heads


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


def _linear_names(model: nn.Module, heads: list[str]) -> list[str]:
    head_prefixes = tuple(f"{h}." for h in heads)
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in heads and not name.startswith(head_prefixes)
    ]


def _short_names(names: list[str]) -> str:
    return ", ".join(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))


def _resolve_targets(model: nn.Module, method: Method, options: dict[str, Any], heads: list[str]) -> dict[str, Any]:
    """Turn a target_modules preset into module names, and check that named targets exist."""
    targets = options.get("target_modules")
    if targets is None or targets == "all-linear":
        return {}
    linear = _linear_names(model, heads)
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if isinstance(targets, str) and targets in TARGET_PRESETS:
        layout = next((names for names in ATTENTION_LAYOUTS if all(
            any(_matches(n, target) for n in linear) for target in names)), None)
        if layout is None:
            raise UserError(
                f"tuning.target_modules: {targets} does not know the attention of this {model_type} model; "
                f"list the modules to adapt, from: {_short_names(linear)}"
            )
        if targets == "auto" and method.name == "ia3":
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


def _full_tuning(model: nn.Module, config: FullConfig) -> None:
    if config.freeze_embeddings:
        _embeddings(model).requires_grad_(False)
    if config.freeze_layers:
        layers = _encoder_layers(model, "freeze_layers")
        if config.freeze_layers > len(layers):
            raise UserError(
                f"tuning.freeze_layers: {config.freeze_layers} is more than the model's {len(layers)} layers"
            )
        for layer in layers[: config.freeze_layers]:
            layer.requires_grad_(False)


def _embeddings(model: nn.Module) -> nn.Module:
    embeddings = getattr(model.base_model, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise UserError(f"tuning.freeze_embeddings: no embeddings module found in {type(model).__name__}")
    return embeddings


def _encoder_layers(model: nn.Module, option: str) -> nn.ModuleList:
    """The stack of transformer layers: the longest ModuleList in the base model."""
    stacks = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList)]
    layers = max(stacks, key=len, default=None)
    expected = getattr(model.config, "num_hidden_layers", None)
    if layers is None or len(layers) != expected:
        raise UserError(
            f"tuning.{option}: {type(model).__name__} does not hold one module per layer "
            f"(ALBERT shares one set of layer weights across depth); use it with BERT-style encoders"
        )
    return layers


def apply_tuning(model, recipe: Recipe):
    """Return the model to train (wrapped by PEFT for PEFT methods) and its trainable-parameter counts."""
    check_tuning(recipe)
    method = resolve_method(recipe)
    options = _with_defaults(method, _checked_options(method))
    if method.name == FULL:
        _full_tuning(model, _build_config(method, options))
    elif method.name == ADAPTER:
        model = _bottleneck_model(model, method, options, recipe)
    else:
        model = _peft_model(model, method, options, recipe)
    return model, count_trainable(model)


def _bottleneck_model(model: nn.Module, method: Method, options: dict[str, Any], recipe: Recipe) -> nn.Module:
    from .adapters import add_bottleneck_adapters

    config = _build_config(method, options)
    heads = head_modules(model)
    config.modules_to_save = heads + [m for m in config.modules_to_save if m not in heads]
    config.base_model_name_or_path = recipe.model.name
    try:
        return add_bottleneck_adapters(model, config)
    except ValueError as exc:
        raise UserError(f"tuning.method adapter: {exc}") from None


def _peft_model(model: nn.Module, method: Method, options: dict[str, Any], recipe: Recipe) -> nn.Module:
    from peft import get_peft_model

    heads = head_modules(model)
    if method.is_prompt_learning:
        options |= _prompt_learning_options(model, method, options)
    options |= _resolve_targets(model, method, options, heads)
    options["modules_to_save"] = heads + [m for m in options.get("modules_to_save") or [] if m not in heads]
    config = _build_config(method, {**options, "task_type": TASK_TYPES[recipe.task]})
    try:
        return _hand_on_every_input(get_peft_model(model, config))
    except (ValueError, TypeError, NotImplementedError) as exc:
        hint = ""
        if "target_modules" in _fields(method.config_class) and "target_modules" not in options:
            hint = "; tuning.target_modules may help: auto, qkv, attention, all-linear or module names"
        raise UserError(
            f"tuning.method {method.name}: PEFT cannot apply it to this model: {str(exc).splitlines()[0]}{hint}"
        ) from None


class QuestionAnsweringPeftModel(PeftModelForQuestionAnswering):
    """PEFT (0.21) makes question-answering models a PeftModelForQuestionAnswering, whose forward takes
    `token_type_ids` and `position_ids` by name and, for every method but prompt learning, never hands them on:
    BERT then reads question and context as one segment, in training and in evaluation, and a merged export, which
    does get them, computes something else than the run did. PeftModel's own forward hands every input on; prompt
    learning, the one case the QA forward is written for, is not offered for QA (see `check_tuning`)."""

    forward = PeftModel.forward


def _hand_on_every_input(model):
    if type(model) is PeftModelForQuestionAnswering:
        model.__class__ = QuestionAnsweringPeftModel
    return model


def _prompt_learning_options(model: nn.Module, method: Method, options: dict[str, Any]) -> dict[str, Any]:
    """The sizes PEFT needs, read from the model. PEFT reads them from config.to_dict(), which misses DistilBERT's
    aliased names (dim, n_layers, n_heads). Virtual tokens live in the input embedding space (ALBERT's is
    narrower than its hidden size); prefixes are keys and values, in the hidden size."""
    config = model.config
    if method.name == "prefix_tuning":
        inputs = [inspect.signature(forward).parameters for forward in (model.forward, model.base_model.forward)]
        if not any("past_key_values" in names for names in inputs):
            if any("cache" in names for names in inputs):
                import transformers

                raise UserError(
                    f"tuning.method prefix: transformers {transformers.__version__} names the past key/values "
                    "`cache`, and PEFT looks for `past_key_values`; pip install 'transformers<5.24', or use lora"
                )
            raise UserError(
                f"tuning.method prefix: prefix tuning feeds past key/values, which {type(model).__name__} does not "
                "take; use prompt tuning, lora or adapter"
            )
        token_dim = config.hidden_size
    else:
        token_dim = model.get_input_embeddings().embedding_dim
    sizes = {"token_dim": token_dim, "num_layers": config.num_hidden_layers,
             "num_attention_heads": config.num_attention_heads}
    return {key: value for key, value in sizes.items() if options.get(key) is None}


def count_trainable(model) -> dict[str, float]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / max(total, 1),
    }


# --------------------------------------------------------------------------- the Trainer's part


def tuning_callbacks(recipe: Recipe) -> list[TrainerCallback]:
    """Trainer callbacks the method needs: AdaLoRA's rank schedule."""
    method = resolve_method(recipe)
    if method.name == ADALORA:
        return [AdaLoraSchedule(fill_total_step="total_step" not in method.options)]
    return []


def optimizer_cls_and_kwargs(model, recipe: Recipe, args) -> tuple[type, dict[str, Any]] | None:
    """The Trainer's `optimizer_cls_and_kwargs`: per-layer learning rates for `layerwise_lr_decay`, else None
    (the Trainer's own optimizer)."""
    method = resolve_method(recipe)
    if method.name != FULL:
        return None
    decay = _build_config(method, _checked_options(method)).layerwise_lr_decay
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
    layers = _encoder_layers(model, "layerwise_lr_decay")
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


# --------------------------------------------------------------------------- saving and loading


@contextlib.contextmanager
def _stock_attention(model, recipe: Recipe):
    """Save in the stock layout (plain transformers and peft load it), then swap our attention back in."""
    if recipe.model.attention != "mha":
        yield
        return
    from .attention import restore_attention, swap_attention

    restore_attention(model)
    try:
        yield
    finally:
        swap_attention(model, backend=recipe.model.backend)


def save_tuned_model(model, recipe: Recipe, out: Path) -> None:
    """Full fine-tuning: the whole model. Adapter methods: what trained (adapter and head) and config.json."""
    from .adapters import save_bottleneck_adapters

    with _stock_attention(model, recipe):
        if isinstance(model, PeftModel):
            model.peft_config[model.active_adapter].base_model_name_or_path = recipe.model.name
            model.save_pretrained(out)
            model.get_base_model().config.save_pretrained(out)
        elif hasattr(model, "bottleneck_config"):
            save_bottleneck_adapters(model, out)
            model.config.save_pretrained(out)
        else:
            model.save_pretrained(out)


EXPORTED_ADAPTER = "adapter"


def adapter_files(folder: str | Path) -> str | None:
    """Which adapter `folder` holds: "peft", "bottleneck", or None for a complete model."""
    from peft.utils.constants import CONFIG_NAME as PEFT_CONFIG_NAME

    from .adapters import CONFIG_NAME as BOTTLENECK_CONFIG_NAME

    folder = Path(folder)
    if (folder / PEFT_CONFIG_NAME).is_file():
        return "peft"
    if (folder / BOTTLENECK_CONFIG_NAME).is_file():
        return "bottleneck"
    return None


def load_base_model(recipe: Recipe, model_dir: str | Path):
    """The task model with base weights `recipe.model.name` and the labels of the config.json in `model_dir`.
    The base may be a run whose heads were pruned (`mha-ft heads --prune`): `load_pruned` reads both."""
    from transformers import AutoConfig

    from .attention.pruning import load_pruned
    from .tasks import get_task
    from .training import resolve_model_name

    name = resolve_model_name(recipe.model.name)
    kwargs = {"revision": recipe.model.revision, "trust_remote_code": recipe.model.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=recipe.model.trust_remote_code)
        return load_pruned(get_task(recipe.task).model_class, name, config=config, **kwargs)
    except OSError as exc:
        where = "a local folder" if Path(name).exists() else "the hub (needs the internet) or a local folder"
        raise UserError(
            f"model.name: cannot load the base model '{recipe.model.name}' for the adapter in {model_dir} "
            f"from {where}: {str(exc).splitlines()[0][:200]}"
        ) from None


def load_tuned_model(recipe: Recipe, model_dir: str | Path):
    """What `save_tuned_model` (or an unmerged `export`) wrote, ready for inference, in the stock layout (with
    pruned heads where the run was pruned: `hf_mha.attention.pruning`).

    A run folder holds the adapter and takes its base weights from `recipe.model.name`; an export of a method
    that cannot merge holds the base weights itself and the adapter in its EXPORTED_ADAPTER subfolder.
    """
    from .attention.pruning import load_pruned
    from .tasks import get_task

    folder = Path(model_dir)
    model_class = get_task(recipe.task).model_class
    try:
        if adapter_files(folder / EXPORTED_ADAPTER):
            base, adapter_dir = load_pruned(model_class, folder), folder / EXPORTED_ADAPTER
        elif adapter_files(folder):
            base, adapter_dir = load_base_model(recipe, folder), folder
        else:
            return load_pruned(model_class, folder)  # from_pretrained, and a run of pruned heads too
    except OSError as exc:
        raise UserError(f"cannot load the model in {folder}: {str(exc).splitlines()[0][:200]}") from None
    if adapter_files(adapter_dir) == "peft":
        return _hand_on_every_input(PeftModel.from_pretrained(base, str(adapter_dir)))
    from .adapters import load_bottleneck_adapters

    try:
        return load_bottleneck_adapters(base, adapter_dir)
    except ValueError as exc:
        raise UserError(str(exc)) from None
