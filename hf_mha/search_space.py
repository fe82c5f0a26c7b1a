"""The `search:` section of a recipe: which keys `mha-ft search` varies, and over what.

    search:
      train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}
      train.warmup_steps: {uniform: [0.0, 0.2]}        # a float below 1 is a share of the steps
      tuning.method: {choice: [full, lora]}
      tuning.r: {choice: [4, 8, 16]}                   # sampled only in trials whose method is not full
      train.per_device_train_batch_size: {int: [8, 32]}

Keys are dotted recipe keys (nested mappings are read as dotted too). Here the shapes are checked; that every key
and every value makes a valid recipe is checked by `hf_mha.search.check_space` before the first trial. A recipe
without the section gets `default_space`: the learning rate over the usual range of its method, the warm-up
share, and the rank for the LoRA family.
"""

from __future__ import annotations

from typing import Any

KINDS = ("log_uniform", "uniform", "int", "choice")
SHAPES = "{log_uniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]} or {choice: [a, b, ...]}"
#: Sections a search may vary; task and output_dir are the search's own.
SECTIONS = ("model", "data", "tuning", "train", "eval")
#: Methods with a rank `r` worth searching.
RANKED = ("lora", "dora", "loha", "lokr")


def parse_space(section: dict[str, Any]) -> dict[str, tuple[str, list]]:
    """The section as {dotted.key: (kind, values)}, in the order given; raises ValueError naming the key."""
    space: dict[str, tuple[str, list]] = {}
    for key, spec in _flat(section).items():
        where = f"search.{key}"
        if key.split(".")[0] not in SECTIONS or "." not in key:
            raise ValueError(f"{where}: a search varies keys of {', '.join(SECTIONS)} (e.g. train.learning_rate)")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ValueError(f"{where}: give one of {SHAPES}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: {kind} takes a list, e.g. {{{kind}: {_example(kind)}}}")
        if kind == "choice":
            if any(not isinstance(v, (str, int, float, bool)) and v is not None for v in values):
                raise ValueError(f"{where}: choices are plain values (numbers, strings, true/false, null)")
            if len(set(map(repr, values))) < len(values):
                raise ValueError(f"{where}: a choice is given twice in {values}")
        else:
            space[key] = (kind, _bounds(where, kind, values))
            continue
        space[key] = (kind, list(values))
    return space


def _flat(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict) and value and not set(value) & set(KINDS):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _number(value):
    """YAML 1.1 reads 1e-3 (no dot) as a string; a bound written that way is still the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _bounds(where: str, kind: str, values: list) -> list:
    values = [_number(v) for v in values] if kind != "int" else values
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numbers or (kind == "int" and not all(isinstance(v, int) for v in values)):
        raise ValueError(f"{where}: {kind} takes [low, high], e.g. {{{kind}: {_example(kind)}}}")
    low, high = values
    if not low < high:
        raise ValueError(f"{where}: low must be below high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ValueError(f"{where}: log_uniform needs low > 0, got {low}")
    return [low, high]


def _example(kind: str) -> str:
    return {"log_uniform": "[1.0e-5, 1.0e-3]", "uniform": "[0.0, 0.2]", "int": "[8, 32]", "choice": "[4, 8, 16]"}[kind]


def default_space(method: str, usual_learning_rate: float | None) -> dict[str, tuple[str, list]]:
    """Learning rate over the method's usual range (a decade around full fine-tuning's 5e-5, around 1e-3 for weight
    adapters, 1e-2 for prompt learning), the warm-up share, and the rank for the LoRA family."""
    if usual_learning_rate is None:
        low, high = 1e-5, 2e-4
    else:
        low, high = usual_learning_rate, usual_learning_rate * 30
    space = {"train.learning_rate": ("log_uniform", [low, high]), "train.warmup_steps": ("uniform", [0.0, 0.2])}
    if method.lower() in RANKED:
        space["tuning.r"] = ("choice", [4, 8, 16, 32])
    return space


def sample(trial, space: dict[str, tuple[str, list]], method: str) -> dict[str, Any]:
    """One trial's values (an optuna trial suggests them). tuning.method is drawn first: the other tuning keys are
    options of an adapter, drawn only when the trial's method is not full."""
    values: dict[str, Any] = {}
    ordered = sorted(space, key=lambda key: key != "tuning.method")
    for key in ordered:
        kind, bounds = space[key]
        if key.startswith("tuning.") and key != "tuning.method" and values.get("tuning.method", method) == "full":
            continue
        if kind == "choice":
            values[key] = trial.suggest_categorical(key, bounds)
        elif kind == "int":
            values[key] = trial.suggest_int(key, *bounds)
        else:
            values[key] = trial.suggest_float(key, *bounds, log=kind == "log_uniform")
    return values


def single_values(space: dict[str, tuple[str, list]], method: str) -> list[dict[str, Any]]:
    """One value set per bound and per choice of the space, each alone, for checking the space against the recipe;
    a tuning option goes with a method that takes options (the first one drawn that is not full)."""
    kind, methods = space.get("tuning.method", ("choice", [method]))
    adapter = next((m for m in methods if m != "full"), method)
    checks = []
    for key, (_, values) in space.items():
        for value in values:
            with_method = {"tuning.method": adapter} if key.startswith("tuning.") and key != "tuning.method" else {}
            checks.append(with_method | {key: value})
    return checks
