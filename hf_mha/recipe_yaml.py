"""Reading a recipe file: UTF-8 YAML, a key given twice is an error, alias bombs and oversized values refused
before anything is built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

#: A recipe is a few kilobytes; anything this large is not one, and is not echoed back.
MAX_RECIPE_BYTES = 1 << 20
#: Values a recipe file may expand to through YAML aliases (`*name`): far above any real recipe, far below a bomb.
MAX_NODES = 100_000
#: The longest single value: paths, names and numbers are short.
MAX_VALUE_CHARS = 10_000


class _RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second


def _expanded_size(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose aliases expand it past MAX_NODES values, or with an oversized value; counted on
    the node graph, which shares aliased nodes, so a bomb is caught before anything is built from it."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_VALUE_CHARS:
                raise UserError(
                    f"{path}:{node.start_mark.line + 1}: a value of {len(node.value):,} characters; recipe values "
                    f"are paths, names and numbers (at most {MAX_VALUE_CHARS:,} characters)"
                )
            total = 1
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            sizes[id(node)] = 1  # a node that contains itself counts once
            total = 1 + sum(size(child) for child in children)
        if total > MAX_NODES:
            raise UserError(
                f"{path}: its YAML aliases expand to more than {MAX_NODES:,} values; a recipe is a few sections "
                "of settings: write the values out"
            )
        sizes[id(node)] = total
        return total

    size(root)


def read_recipe_yaml(path: Path) -> Any:
    """The YAML document in `path`, read as recipes are: UTF-8, no duplicate keys, no alias bombs."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: {size:,} bytes is not a recipe (recipes are a few KB); check the --recipe path")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the recipe as UTF-8") from None
    loader = _RecipeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}
        _expanded_size(root, path)
        return loader.construct_document(root)
    except _DuplicateKey as dup:
        raise UserError(
            f"{path}:{dup.second}: key '{dup.key}' is given twice in one section (first at line {dup.first}); "
            "keep one of them"
        ) from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a recipe; a recipe is a few sections of settings") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); check indentation and quoting") from None
    finally:
        loader.dispose()
