"""The built-in recipes for `mha-ft ls` (one row each) and `mha-ft cp` (a copy to edit)."""

from __future__ import annotations

from pathlib import Path

from . import fsutil
from .errors import UserError, did_you_mean
from .recipe import FilesSection, builtin_recipes, load_recipe
from .recipe_yaml import read_recipe_yaml


def builtin_summaries() -> list[dict[str, str]]:
    """One row per built-in recipe for `mha-ft ls`: name, task, model, tuning, data (packaged files relative to
    the recipes folder, so the row stays short)."""
    rows = []
    for name, path in sorted(builtin_recipes().items()):
        recipe = load_recipe(str(path))
        data = recipe.data
        files = [Path(p) for p in vars(data.files or FilesSection()).values() if p]
        shown = [str(f.relative_to(path.parent)) if f.is_relative_to(path.parent) else str(f) for f in files]
        rows.append({
            "name": name, "task": recipe.task, "model": recipe.model.name, "tuning": recipe.tuning.method,
            "data": f"files {', '.join(shown)}" if shown else f"{data.dataset} (hub)" if data.dataset else "",
        })
    return rows


def copy_builtin(name: str, destination: Path) -> Path:
    """Copy built-in recipe `name` to `destination` (a file, or a folder to put NAME.yaml in), comments kept;
    data paths relative to the packaged recipe become absolute, so the copy works from anywhere."""
    recipes = builtin_recipes()
    if name not in recipes:
        raise UserError(f"no built-in recipe '{name}'{did_you_mean(name, recipes)}; see `mha-ft ls`")
    target = destination / f"{name}.yaml" if destination.is_dir() else destination
    if target.exists():
        raise UserError(f"{target} already exists; choose another destination")
    source = recipes[name]
    text = source.read_text(encoding="utf-8")
    files = ((read_recipe_yaml(source) or {}).get("data") or {}).get("files") or {}  # as written, not resolved
    for relative in {path for path in files.values() if path and not Path(path).is_absolute()}:
        if (source.parent / relative).is_file():
            text = text.replace(relative, str(source.parent / relative))
    fsutil.write_text(target, text)
    return target
