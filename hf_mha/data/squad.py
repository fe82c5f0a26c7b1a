"""SQuAD v1.1 / v2.0 JSON files: the nested articles / paragraphs / questions layout, one row per question."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value

from ..errors import UserError

SQUAD_FEATURES = Features({
    "id": Value("string"),
    "title": Value("string"),
    "context": Value("string"),
    "question": Value("string"),
    "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
})


def is_squad_json(path: Path) -> bool:
    """Whether a .json file looks like SQuAD's nested layout (a single object with data[].paragraphs)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16).lstrip()
    return head.startswith("{") and '"paragraphs"' in head and '"data"' in head


def read_squad(path: Path) -> Dataset:
    """A SQuAD v1.1/v2.0 file flattened to one row per question: id, title, context, question, answers.

    Unanswerable v2.0 questions (`is_impossible`) get empty answer lists, as in the hub's squad_v2.
    """
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); check the file is complete") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise UserError(f"{path}: no 'data' list of articles; SQuAD files look like {{\"data\": [{{\"title\", \"paragraphs\"}}]}}")
    rows = {name: [] for name in SQUAD_FEATURES}
    for number, article in enumerate(articles, 1):
        try:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else qa["answers"]
                    rows["id"].append(str(qa["id"]))
                    rows["title"].append(str(article.get("title", "")))
                    rows["context"].append(paragraph["context"])
                    rows["question"].append(qa["question"])
                    rows["answers"].append({
                        "text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers],
                    })
        except (KeyError, TypeError, ValueError) as exc:
            what = f"no key {exc}" if isinstance(exc, KeyError) else str(exc)
            title = article.get("title", "untitled") if isinstance(article, dict) else "not an object"
            raise UserError(
                f"{path}: article {number} ({title}) is malformed ({what}); each article needs paragraphs[].context "
                "and paragraphs[].qas[] with id, question and answers[].text/answer_start"
            ) from None
    return Dataset.from_dict(rows, features=SQUAD_FEATURES)
