"""Local data files as a `datasets.Dataset`: csv, tsv, json/jsonl, parquet, SQuAD's nested json and CoNLL column
files, by extension or named by `data.format` (any file name). Relative paths were looked up by the recipe (in the
current folder first, then beside the recipe file).
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

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "conll", "squad")
#: Formats read by datasets' packaged builders, and the builder for each.
TABULAR = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}
CONLL_SUFFIXES = {".conll", ".conllu", ".iob", ".iob1", ".iob2", ".bio", ".txt", ".testa", ".testb", ".train"}
BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
             **{suffix: "conll" for suffix in CONLL_SUFFIXES}}


def data_file(path: str, key: str) -> Path:
    """The file at `path`, named in the recipe at `key`. The recipe made the paths it found absolute; one still
    relative was found nowhere."""
    if Path(path).is_file():
        return Path(path)
    looked = "" if Path(path).is_absolute() else " (looked in the current folder and beside the recipe)"
    if Path(path).is_dir():
        raise UserError(f"{key}: {path} is a folder; give a data file ({key}=PATH)")
    raise UserError(f"{key}: file not found: {path}{looked}; fix the path in the recipe or override it ({key}=PATH)")


def file_format(path: Path, key: str, given: str = "auto", option: str = "data.format") -> str:
    """`given` unless auto; else by extension (CoNLL-2003's eng.train style names too), a .json holding SQuAD's
    nested layout being `squad`."""
    if given not in ("auto", *FORMATS):
        raise UserError(f"{option}: unknown format '{given}'; use auto (by extension) or one of {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    found = given if given != "auto" else BY_SUFFIX.get(suffix, "conll" if path.name.startswith(("eng.", "deu.")) else None)
    if found is None:
        raise UserError(
            f"{key}: cannot tell the format of {path} from '{suffix or path.name}'; name it with {option}="
            f"{'|'.join(FORMATS)} (known extensions: {', '.join(sorted(BY_SUFFIX))})"
        )
    return "squad" if found == "json" and is_squad_json(path) else found


def read_file(path: Path, key: str = "data.files", data=None, fmt: str | None = None) -> Dataset:
    """One local file as a Dataset. `data` (the recipe's DataSection) gives the format and, for csv/tsv, whether
    the first row is a header; `fmt` overrides the format (a command's --format)."""
    form = file_format(path, key, fmt or (data.format if data is not None else "auto"),
                       "--format" if fmt or data is None else "data.format")
    if form == "squad":
        loaded = read_squad(path)
    elif form == "conll":
        loaded = read_conll(path)
    else:
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if form == "tsv" else {}
        if form in ("csv", "tsv") and data is not None and not data.header:
            _check_width(path, form, data.column_names, kwargs)
            kwargs.update(column_names=list(data.column_names), header=None)
        try:
            loaded = datasets.load_dataset(TABULAR[form], data_files={"split": str(path)}, split="split", **kwargs)
        except Exception as exc:  # datasets wraps parser errors in several types; all mean "unreadable file"
            if "corresponds to no data" in str(exc) or _blank(path):  # a header and no rows, or nothing at all
                raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file") from None
            where = _broken_json(path) if TABULAR[form] == "json" else None
            if where:
                raise UserError(f"{key}: {where}; fix or remove that line") from None
            raise UserError(f"{key}: cannot read {path} as {form}: {short_reason(exc)}") from None
    if len(loaded) == 0:
        raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file")
    return loaded


def _check_width(path: Path, form: str, names: list[str], kwargs: dict) -> None:
    """data.column_names must name every column of the first row: given fewer, pandas silently turns the extra
    leading columns into an index and shifts every name onto the wrong column."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first = f.readline()
    if not first.strip():
        return
    width = len(first.rstrip("\r\n").split("\t")) if form == "tsv" else len(next(csv.reader([first])))
    if width != len(names):
        raise UserError(
            f"data.column_names: {len(names)} name{'s' * (len(names) != 1)} ({', '.join(names)}) but {path}:1 has "
            f"{width} columns; "
            "give one name per column"
        )


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


def read_inputs(path: str, option: str = "--input", fmt: str = "auto") -> Dataset:
    """Inputs for `mha-ft predict --input` / `eval --file`: any format read_file knows, by extension unless
    `fmt` (the command's --format) names it."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{option}: file not found: {path}")
    return read_file(file, option, fmt=fmt)
