"""Token classification (NER, chunking): one tag per word, scored per entity with seqeval.

Words are split into sub-tokens by the tokenizer; the first sub-token of each word carries the word's tag and
the others are ignored by the loss (-100), unless `data.label_all_tokens` labels them too. Predictions are read
back from the first sub-token of each word, so every word of the input gets a tag; words cut off by
`data.max_length` are predicted O, which keeps the entity scores honest about truncation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from .. import fsutil
from ..data import require_columns
from ..errors import UserError, did_you_mean
from ..recipe import DataSection, Recipe
from .base import Labels, count_labels, output_name, reference_split

IGNORED = -100
BASE_METRICS = ("f1", "precision", "recall", "accuracy")
_PREFIX_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3, "L": 4, "U": 5}


# --------------------------------------------------------------------------- columns and labels


def _split_tag(tag: str) -> tuple[str, str]:
    """('B', 'PER') for B-PER; ('', tag) for O and tags without a scheme prefix."""
    if len(tag) > 2 and tag[1] == "-":
        return tag[0], tag[2:]
    return "", tag


def to_iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2: an I-X that opens an entity (first word, after O, after another type, or after an entity
    that ended with E-X/S-X) becomes B-X. IOB1's B-X between two adjacent X entities already means what IOB2's
    does, and valid IOB2 or IOBES sequences come back unchanged."""
    converted = []
    previous_prefix, previous_type = "", "O"
    for tag in tags:
        prefix, kind = _split_tag(tag)
        if prefix == "I" and not (previous_prefix in ("B", "I") and previous_type == kind):
            tag, prefix = f"B-{kind}", "B"
        converted.append(tag)
        previous_prefix, previous_type = prefix, kind
    return converted


def order_tags(tags) -> list[str]:
    """O first, then by entity type, B- before I- (then E-, S-, ...); in IOB tag sets every type gets both
    B- and I-, so an I-X that the training split happens to lack is still a known tag."""
    tags = set(tags)
    split = [_split_tag(t) for t in tags if t != "O"]
    if split and all(prefix in ("B", "I") for prefix, _ in split):
        tags |= {f"{prefix}-{kind}" for _, kind in split for prefix in ("B", "I")}
    return sorted(tags, key=lambda t: (t != "O", _split_tag(t)[1], _PREFIX_ORDER.get(_split_tag(t)[0], 9), t))


def _class_names(ds: Dataset, column: str) -> list[str] | None:
    """The ClassLabel names of a sequence-of-ClassLabel column (hub datasets), else None."""
    inner = getattr(ds.features[column], "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def words_of(ds: Dataset, data: DataSection, split: str) -> list[list[str]]:
    """Each row's words: the token column, or else the first of `data.text_columns` split on whitespace (raw
    text to tag)."""
    # ds[column] is a lazy Column whose items are read one Arrow row at a time; [:] reads it all at once.
    if data.token_column in ds.column_names:
        return [[str(w) for w in words] for words in ds[data.token_column][:]]
    text_column = data.text_columns[0]
    if text_column in ds.column_names:
        return [str(text or "").split() for text in ds[text_column][:]]
    raise UserError(
        f"data.token_column: column '{data.token_column}' not in the {split} data"
        f"{did_you_mean(data.token_column, ds.column_names)}; columns: {', '.join(ds.column_names)} "
        f"(raw text in a '{text_column}' column is split on whitespace instead)"
    )


def tags_of(ds: Dataset, data: DataSection, split: str, id_names: list[str] | None = None) -> list[list[str]]:
    """Each row's tags as strings (IOB2 unless `data.to_iob2` is false), one per word, checked against the words.

    Integer tags are read through the column's ClassLabel names, else through `id_names` (data.labels).
    """
    require_columns(ds, [data.tag_column], split, "data.tag_column")
    names = _class_names(ds, data.tag_column) or id_names
    words = words_of(ds, data, split)
    rows = []
    for row, (tags, row_words) in enumerate(zip(ds[data.tag_column][:], words), 1):
        if not isinstance(tags, list) or len(tags) != len(row_words):
            count = len(tags) if isinstance(tags, list) else "no list of"
            raise UserError(
                f"data.tag_column: the {split} split's row {row} has {len(row_words)} words but {count} tags in "
                f"'{data.tag_column}'; every word needs exactly one tag"
            )
        if any(isinstance(t, int) for t in tags):
            if names is None:
                raise UserError(
                    f"data.tag_column: '{data.tag_column}' holds tag ids without names in the {split} split; "
                    "list the tag names in id order in data.labels"
                )
            if not all(isinstance(t, int) and 0 <= t < len(names) for t in tags):
                raise UserError(f"data.tag_column: tag ids {tags} in the {split} split (row {row}) are outside data.labels")
            tags = [names[t] for t in tags]
        tags = [str(t) for t in tags]
        rows.append(to_iob2(tags) if data.to_iob2 else tags)
    return rows


# --------------------------------------------------------------------------- features


def _align(word_ids: list[int], tag_ids: list[int], inside: list[int], label_all_tokens: bool) -> list[int]:
    """Sub-token labels: the word's tag on its first sub-token; on the rest -100, or the inside tag when
    `label_all_tokens`; -100 on special tokens."""
    aligned, previous = [], -1
    for word in word_ids:
        if word < 0:
            aligned.append(IGNORED)
        elif word != previous:
            aligned.append(tag_ids[word])
        else:
            aligned.append(inside[tag_ids[word]] if label_all_tokens else IGNORED)
        previous = word
    return aligned


# --------------------------------------------------------------------------- scores


def word_predictions(logits, word_ids: list[list[int]], lengths: list[int], names: list[str]) -> list[list[str]]:
    """One tag per word from the first sub-token's prediction; words without a sub-token (cut off by
    max_length, or dropped by the tokenizer) get O."""
    if isinstance(logits, tuple):
        logits = logits[0]
    best = np.asarray(logits).argmax(axis=-1)
    sentences = []
    for row, (ids, length) in enumerate(zip(word_ids, lengths)):
        tags: list[str | None] = [None] * length
        for position, word in enumerate(ids):
            if word >= 0 and tags[word] is None:
                tags[word] = names[int(best[row, position])]
        sentences.append([tag or "O" for tag in tags])
    return sentences


def ner_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """The flat metrics of a run: micro precision/recall/F1 over entities, token accuracy, and F1 per entity type
    (`LOC_f1`, ...), from the offline seqeval module."""
    from ..metrics import load_metric

    result = load_metric("seqeval", keep_in_memory=True).compute(predictions=predicted, references=gold)
    scores = {name: result[f"overall_{name}"] for name in BASE_METRICS}
    scores |= {f"{kind}_f1": value["f1"] for kind, value in result.items() if isinstance(value, dict)}
    return scores


def entity_spans(words: list[str], tags: list[str]) -> list[dict]:
    """Entities as word spans (end exclusive) with their text, read as seqeval reads them."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [
        {"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start:end + 1])}
        for kind, start, end in get_entities(tags)
    ]


def conll_text(words: list[list[str]], *columns: list[list[str]]) -> str:
    """CoNLL columns: word then each tag column, a blank line after every sentence."""
    blocks = []
    for i, sentence in enumerate(words):
        blocks.append("".join(" ".join([w, *(c[i][j] for c in columns)]) + "\n" for j, w in enumerate(sentence)))
    return "\n".join(blocks) + ("\n" if blocks else "")


# --------------------------------------------------------------------------- the task


class TokenClassification:
    model_class = AutoModelForTokenClassification

    def labels(self, raw, recipe: Recipe) -> Labels:
        data = recipe.data
        given = list(data.labels) if data.labels else None
        tag_rows = {split: tags_of(ds, data, split, given) for split, ds in raw.items()}  # every split is scored
        if given:
            names = given
        else:
            reference = reference_split(raw)
            found = {tag for tags in tag_rows[reference] for tag in tags}
            names = _class_names(raw[reference], data.tag_column) or []
            names += [tag for tag in order_tags(found) if tag not in names]
        known = set(names)
        for split, rows in tag_rows.items():
            for row, tags in enumerate(rows, 1):
                unknown = next((t for t in tags if t not in known), None)
                if unknown is not None:
                    raise UserError(
                        f"data.tag_column: tag {unknown!r} in the {split} split (row {row}) is not in the tag set "
                        f"{names}; fix the data or list every tag in data.labels"
                    )
        if len(names) < 2:
            raise UserError(f"data.tag_column: only one tag ({names}) in train; token classification needs two or more")
        return Labels(names)

    def labels_from_config(self, config) -> Labels:
        return Labels.from_config(config)

    def preprocess(self, ds: Dataset, tokenizer, recipe: Recipe, labels: Labels, training: bool) -> Dataset:
        data = recipe.data
        words = words_of(ds, data, "input")
        label2id = {name: i for i, name in enumerate(labels.names)}
        tag_ids = None
        if data.tag_column in ds.column_names:
            tag_rows = tags_of(ds, data, "input", labels.names)
            unknown = next((t for tags in tag_rows for t in tags if t not in label2id), None)
            if unknown is not None:
                raise UserError(f"data.tag_column: tag {unknown!r} is not one the model knows ({', '.join(labels.names)})")
            tag_ids = [[label2id[t] for t in tags] for tags in tag_rows]
        # A continuation of a B-X word is inside the entity: I-X, when that tag exists.
        inside = [label2id.get(f"I-{name[2:]}", i) if name.startswith("B-") else i for i, name in enumerate(labels.names)]

        def encode(batch, indices):
            encoded = tokenizer([words[i] for i in indices], is_split_into_words=True, truncation=True, max_length=data.max_length)
            word_ids = [[-1 if w is None else w for w in encoded.word_ids(row)] for row in range(len(indices))]
            if not training:  # to read predictions back per word
                encoded["word_ids"] = word_ids
            if tag_ids is not None:
                encoded["labels"] = [_align(ids, tag_ids[i], inside, data.label_all_tokens) for ids, i in zip(word_ids, indices)]
            return encoded

        return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, desc="Tokenizing")

    def label_counts(self, ds: Dataset, recipe: Recipe) -> dict | None:
        if recipe.data.tag_column not in ds.column_names:
            return None
        names = _class_names(ds, recipe.data.tag_column) or (list(recipe.data.labels) if recipe.data.labels else None)
        return count_labels(tag for tags in tags_of(ds, recipe.data, "input", names) for tag in tags)

    def token_counts(self, ds: Dataset, tokenizer, recipe: Recipe) -> list[int]:
        words = words_of(ds, recipe.data, "input")
        return [len(ids) for ids in tokenizer(words, is_split_into_words=True, truncation=False, verbose=False)["input_ids"]]

    def collator(self, tokenizer, recipe: Recipe):
        return DataCollatorForTokenClassification(tokenizer)

    def metric_names(self, recipe: Recipe, labels: Labels) -> list[str]:
        kinds = sorted({_split_tag(name)[1] for name in labels.names or [] if name != "O"})
        known = [*BASE_METRICS, *(f"{kind}_f1" for kind in kinds)]
        for name in recipe.eval.metrics or []:
            if name not in known:
                raise UserError(f"eval.metrics: '{name}' is not a token-classification metric; choose from {', '.join(known)}")
        return list(recipe.eval.metrics or BASE_METRICS)

    def compute_metrics(self, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe):
        gold = tags_of(raw, recipe.data, "validation", labels.names)
        word_ids = features["word_ids"][:]

        def compute(prediction) -> dict:
            predicted = word_predictions(prediction.predictions, word_ids, [len(g) for g in gold], labels.names)
            return ner_metrics(gold, predicted)

        return compute

    def score(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe, out_dir: Path | None, prefix: str) -> tuple[dict, str]:
        from ..reports import entity_report_text

        data = recipe.data
        trainer.compute_metrics = None  # scored here, once, on whole words
        output = trainer.predict(features, metric_key_prefix=prefix)
        words = words_of(raw, data, prefix)
        predicted = word_predictions(output.predictions, features["word_ids"][:], [len(w) for w in words], labels.names)
        gold = tags_of(raw, data, prefix, labels.names)
        metrics = {f"{prefix}_{k}": v for k, v in ner_metrics(gold, predicted).items()} | output.metrics
        report = entity_report_text(gold, predicted)
        if out_dir is not None:
            fsutil.write_text(out_dir / output_name(prefix, "predictions.conll"), conll_text(words, gold, predicted))
            fsutil.write_text(out_dir / f"{prefix}_report.txt", report)
        return metrics, report

    def predict(self, trainer, raw: Dataset, features: Dataset, labels: Labels, recipe: Recipe) -> list[dict]:
        output = trainer.predict(features, metric_key_prefix="predict")
        words = words_of(raw, recipe.data, "input")
        predicted = word_predictions(output.predictions, features["word_ids"][:], [len(w) for w in words], labels.names)
        text_column = recipe.data.text_columns[0]
        texts = raw[text_column][:] if recipe.data.token_column not in raw.column_names else None
        rows = []
        for i, (sentence, tags) in enumerate(zip(words, predicted)):
            row = {text_column: texts[i]} if texts is not None else {}
            rows.append(row | {"tokens": sentence, "predicted": tags, "entities": entity_spans(sentence, tags)})
        return rows


TASK = TokenClassification()
