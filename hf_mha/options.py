"""Options given in YAML, checked against the fields of a config dataclass.

The recipe's `train:` section is checked against `transformers.TrainingArguments`, its `tuning:` options against
the method's config class (PEFT's `LoraConfig`, ..., or ours). Both go through `check_options`: an unknown key
is an error with a "did you mean" hint, and a value of the wrong type is an error naming the type wanted.

One conversion happens on the way: YAML 1.1 reads `2e-5` (no dot) as a string, and a quoted value stays one,
so a string becomes the number, or ("true"/"false") the bool, a field asks for, and a number becomes the string
a string-only field asks for, and `false` becomes "no" where a field takes "no" (YAML 1.1 reads an unquoted
`no` as false: `eval_strategy: no`). Nothing else is converted: "yes" is no bool.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Callable

from .errors import echo


def field_hints(config_class: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a user may set on `config_class` (a dataclass), with their type hints."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if f.init and f.name not in exclude}


def accepts(value: Any, hint: Any) -> bool:
    """Whether `value` is of the type `hint` describes (types it cannot judge, such as callables, pass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(accepts(value, arg) for arg in args)
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
        return isinstance(value, (list, tuple)) and (not args or all(accepts(v, args[0]) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True


def describe(hint: Any) -> str:
    """The type `hint` describes, as a user reads it: `int or null`, `'none' | 'all'`, `list of str`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"list of {describe(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any) -> Any:
    """`value` as the type `hint` wants, where YAML or the command line gave it as text (see the module doc)."""
    if accepts(value, hint):
        return value
    if isinstance(value, str):
        if value.lower() in ("true", "false") and accepts(True, hint):
            return value.lower() == "true"
        for kind in (int, float):
            number = _number(value, kind)
            if number is not None and accepts(number, hint):
                return number
    elif value is False and accepts("no", hint):
        return "no"  # YAML 1.1 reads an unquoted `no` (eval_strategy: no, save_strategy: no) as false
    elif isinstance(value, float) and value.is_integer() and accepts(int(value), hint):
        return int(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and accepts(str(value), hint):
        return str(value)
    return value


def _number(text: str, kind: type) -> int | float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    if kind is int:
        return int(number) if number.is_integer() and "." not in text else None
    return number


def check_options(
    options: dict[str, Any], hints: dict[str, Any], where: str, unknown: Callable[[str], str]
) -> dict[str, Any]:
    """`options` with every value coerced to its field's type. ValueError on an unknown key (`unknown(key)` says
    what to do instead) or on a value of the wrong type, naming `where.key`."""
    checked = {}
    for key, value in options.items():
        if key not in hints:
            raise ValueError(f"{where}.{key}: {unknown(key)}")
        value = coerce(value, hints[key])
        if not accepts(value, hints[key]):
            raise ValueError(f"{where}.{key} must be {describe(hints[key])}, got {echo(value)}")
        checked[key] = value
    return checked
