"""CoNLL column files: one word per line, its tags in further columns, a blank line between sentences."""

from __future__ import annotations

import re
from pathlib import Path

from datasets import Dataset

from ..errors import UserError

# CoNLL-U's ten fields; FORM (the word) becomes `tokens` like everywhere else.
CONLLU_COLUMNS = ("id", "tokens", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
#: CoNLL-U-style sentence metadata (`# sent_id = 3`, `# text = ...`) that other CoNLL dialects carry too.
METADATA = re.compile(r"^#\s*[\w.-]+\s*=")


def _fields(line: str) -> list[str]:
    """Tab-separated when the line has a tab (words may hold spaces), else whitespace; a line of only tabs or
    spaces has none: it separates sentences (editors and converters leave such lines; split on tabs it would be
    a word "" with a tag "" that merges two sentences)."""
    return (line.split("\t") if "\t" in line else line.split()) if line.strip() else []


def _is_comment(line: str, fields: list[str], width: int | None, in_sentence: bool) -> bool:
    """A `#` line is a comment when it cannot be a token line (its column count is not the file's) or when it is
    `# key = value` metadata before a sentence. `#` is also a legal word (`# SYM O`, tweets' `#hashtag`), and a
    token line always has the file's column count, so such lines stay words."""
    if not line.startswith("#"):
        return False
    return len(fields) != width or (not in_sentence and bool(METADATA.match(line)))


def read_conll(path: Path) -> Dataset:
    """A CoNLL column file as rows of `tokens`, `column_1`..`column_<n-2>` and `ner_tags` (the last column).

    One word per line, columns separated by whitespace (tabs when the line has any, so words may hold spaces),
    a blank or whitespace-only line between sentences. `-DOCSTART-` lines are document markers and `#` comment
    lines are skipped. `.conllu` files take CoNLL-U's column names and skip comments, multiword-token ranges and
    empty nodes.
    """
    path = Path(path)
    conllu = path.suffix.lower() == ".conllu"
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); convert it with iconv -t utf-8") from None
    # The file's column count, from its first token line, so that comment lines above it are known as such.
    width = next((len(fields) for line in lines if not line.startswith(("#", "-DOCSTART-"))
                  for fields in [_fields(line)] if fields), None)
    sentences: list[list[list[str]]] = []
    sentence: list[list[str]] = []
    first_line = None
    for number, line in enumerate(lines, 1):
        fields = _fields(line)
        if not fields or fields[0] == "-DOCSTART-":
            if sentence:
                sentences.append(sentence)
                sentence = []
            continue
        if conllu and (line.startswith("#") or not fields[0].isdigit()):
            continue
        if not conllu and _is_comment(line, fields, width, bool(sentence)):
            continue
        first_line = first_line or number
        if len(fields) != width:
            raise UserError(
                f"{path}:{number}: {len(fields)} columns but line {first_line} has {width}; every line of a "
                "CoNLL file needs the same columns (word first, tag last), blank lines between sentences"
            )
        if not all(field.strip() for field in fields):
            column = next(i for i, field in enumerate(fields, 1) if not field.strip())
            raise UserError(
                f"{path}:{number}: column {column} is empty; every line of a CoNLL file holds a word and its "
                "tags (tab or space separated), and only blank lines separate sentences"
            )
        sentence.append(fields)
    if sentence:
        sentences.append(sentence)
    if conllu:
        if width not in (None, len(CONLLU_COLUMNS)):
            raise UserError(f"{path}:{first_line}: a .conllu file has {len(CONLLU_COLUMNS)} columns, this one {width}")
        names = list(CONLLU_COLUMNS)
    else:
        width = width or 2
        names = ["tokens"] + [f"column_{i}" for i in range(1, width - 1)] + (["ner_tags"] if width > 1 else [])
    return Dataset.from_dict({name: [[fields[i] for fields in s] for s in sentences] for i, name in enumerate(names)})
