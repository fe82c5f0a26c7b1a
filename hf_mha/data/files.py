"""Local data files as a `datasets.Dataset`, format by extension.

.csv, .tsv, .json/.jsonl, .parquet, SQuAD's nested .json, and CoNLL column files (.conll/.iob/.iob1/.iob2/.txt
and CoNLL-2003's eng.train style names). Relative paths are looked up in the current folder first, then beside
the recipe file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import datasets
from datasets import Dataset

from ..errors import UserError
from ..recipe import Recipe
from .conll import read_conll
from .squad import is_squad_json, read_squad

TABULAR = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
CONLL_SUFFIXES = {".conll", ".conllu", ".iob", ".iob1", ".iob2", ".bio", ".txt", ".testa", ".testb", ".train"}


def resolve_data_path(path: str, recipe: Recipe, key: str) -> Path:
    candidates = [Path(path)]
    if recipe.source and not Path(path).is_absolute():
        candidates.append(Path(recipe.source).parent / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise UserError(f"{key}: file not found: {tried}; fix the path in the recipe or override it ({key}=PATH)")


def read_file(path: Path, key: str = "data.files") -> Dataset:
    """One local file as a Dataset, format by extension."""
    suffix = path.suffix.lower()
    if suffix == ".json" and is_squad_json(path):  # SQuAD's nested articles/paragraphs/questions layout
        loaded = read_squad(path)
    elif suffix in TABULAR:
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
        try:
            loaded = datasets.load_dataset(TABULAR[suffix], data_files={"split": str(path)}, split="split", **kwargs)
        except Exception as exc:  # datasets wraps parser errors in several types; all mean "unreadable file"
            if "corresponds to no data" in str(exc):  # a header and no rows
                raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file") from None
            raise UserError(f"{key}: cannot read {path} as {suffix[1:]}: {short_reason(exc)}") from None
    elif suffix in CONLL_SUFFIXES or path.name.startswith(("eng.", "deu.")):
        loaded = read_conll(path)
    else:
        known = ", ".join(sorted(set(TABULAR) | CONLL_SUFFIXES))
        raise UserError(f"{key}: unknown file type '{suffix or path.name}' for {path}; use one of {known}")
    if len(loaded) == 0:
        raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file")
    return loaded


def short_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def read_inputs(path: str) -> Dataset:
    """Inputs for `mha-ft predict` / `eval --file`: any format read_file knows."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--input: file not found: {path}")
    return read_file(file, "--input")
