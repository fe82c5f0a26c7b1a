"""Local data files as a `datasets.Dataset`, format by extension.

.csv, .tsv, .json/.jsonl, .parquet, SQuAD's nested .json, and CoNLL column files (.conll/.iob/.iob1/.iob2/.txt
and CoNLL-2003's eng.train style names). Relative paths were looked up by the recipe (in the current folder
first, then beside the recipe file).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
from datasets import Dataset

from ..errors import UserError
from .conll import read_conll
from .squad import is_squad_json, read_squad

TABULAR = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
CONLL_SUFFIXES = {".conll", ".conllu", ".iob", ".iob1", ".iob2", ".bio", ".txt", ".testa", ".testb", ".train"}


def data_file(path: str, key: str) -> Path:
    """The file at `path`, named in the recipe at `key`. The recipe made the paths it found absolute; one still
    relative was found nowhere."""
    if Path(path).is_file():
        return Path(path)
    looked = "" if Path(path).is_absolute() else " (looked in the current folder and beside the recipe)"
    if Path(path).is_dir():
        raise UserError(f"{key}: {path} is a folder; give a data file ({key}=PATH)")
    raise UserError(f"{key}: file not found: {path}{looked}; fix the path in the recipe or override it ({key}=PATH)")


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
            if "corresponds to no data" in str(exc) or _blank(path):  # a header and no rows, or nothing at all
                raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file") from None
            where = _broken_json(path) if TABULAR[suffix] == "json" else None
            if where:
                raise UserError(f"{key}: {where}; fix or remove that line") from None
            raise UserError(f"{key}: cannot read {path} as {suffix[1:]}: {short_reason(exc)}") from None
    elif suffix in CONLL_SUFFIXES or path.name.startswith(("eng.", "deu.")):
        loaded = read_conll(path)
    else:
        known = ", ".join(sorted(set(TABULAR) | CONLL_SUFFIXES))
        raise UserError(f"{key}: unknown file type '{suffix or path.name}' for {path}; use one of {known}")
    if len(loaded) == 0:
        raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file")
    return loaded


def _blank(path: Path) -> bool:
    with open(path, "rb") as f:
        return not f.read(1 << 16).strip()


def _broken_json(path: Path) -> str | None:
    """`file:line: not valid JSON (why)` for the first line that breaks a JSON lines file (or, for a single JSON
    document, where it breaks); None when the text parses and the problem is elsewhere. datasets' own error
    names neither line nor reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); convert it with iconv -t utf-8"
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError as whole:
        document_error = f"{path}:{whole.lineno}: not valid JSON ({whole.msg})"
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                return f"{path}:{number}: not valid JSON ({exc.msg})" if path.suffix.lower() == ".jsonl" or number > 1 else document_error
    return None


def short_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def read_inputs(path: str, option: str = "--input") -> Dataset:
    """Inputs for `mha-ft predict --input` / `eval --file`: any format read_file knows."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{option}: file not found: {path}")
    return read_file(file, option)
