"""CoNLL column files: one word per line, its tags in further columns, a blank line between sentences."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ..errors import UserError

# CoNLL-U's ten fields; FORM (the word) becomes `tokens` like everywhere else.
CONLLU_COLUMNS = ("id", "tokens", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conll(path: Path) -> Dataset:
    """A CoNLL column file as rows of `tokens`, `column_1`..`column_<n-2>` and `ner_tags` (the last column).

    One word per line, columns separated by whitespace (tabs when the line has any, so words may hold spaces),
    a blank (or whitespace-only) line between sentences. `-DOCSTART-` lines are document markers, not sentences. `.conllu` files
    take CoNLL-U's column names and skip comments, multiword-token ranges and empty nodes.
    """
    path = Path(path)
    conllu = path.suffix.lower() == ".conllu"
    sentences: list[list[list[str]]] = []
    sentence: list[list[str]] = []
    width = first_line = None
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                line = line.rstrip("\r\n")
                # A line of only tabs or spaces separates sentences too (editors and converters leave them);
                # split on tabs it would be a word "" with a tag "" that merges two sentences.
                fields = (line.split("\t") if "\t" in line else line.split()) if line.strip() else []
                if not fields or fields[0] == "-DOCSTART-":
                    if sentence:
                        sentences.append(sentence)
                        sentence = []
                    continue
                if conllu and (line.startswith("#") or not fields[0].isdigit()):
                    continue
                if width is None:
                    width, first_line = len(fields), number
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
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); convert it with iconv -t utf-8") from None
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
