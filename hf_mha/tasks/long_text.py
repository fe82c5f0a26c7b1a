"""Texts longer than max_length, for text classification (`data.long_text`):

- `truncate` (default): the first max_length tokens;
- `head_tail`: the first quarter and the last three quarters of the token budget (Sun et al., 2019, "How to
  Fine-Tune BERT for Text Classification?": the head and the tail carry most of a review's label);
- `windows`: max_length windows overlapping by `data.stride` tokens (default max_length // 4), each labelled with its document's label
  for training; at evaluation and prediction the windows' logits are aggregated per document (`mean` or `max`,
  `data.window_aggregation`), so metrics and predictions count documents, not windows.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..recipe import DataSection

DOCUMENT = "document"  # the feature column naming each window's source row


def encode(tokenizer, texts: list[str], rows: list[int], data: DataSection) -> dict:
    """Tokenized features of one batch of texts (`rows`: their row numbers), with a `document` column when
    windowed."""
    if data.long_text == "windows":
        try:
            encoded = tokenizer(texts, truncation=True, max_length=data.max_length,
                                stride=data.max_length // 4 if data.stride is None else data.stride,
                                return_overflowing_tokens=True)
        except Exception as exc:  # the Rust tokenizer raises a bare Exception for windows it cannot make
            raise UserError(f"data.stride: cannot cut texts into windows of {data.max_length} tokens: {exc}") from None
        encoded[DOCUMENT] = [rows[i] for i in encoded.pop("overflow_to_sample_mapping")]
        return encoded
    if data.long_text == "head_tail":
        # Encoded whole, then cut between the special tokens (v5 tokenizers have no prepare_for_model); where the
        # specials sit is read off one probe, so any encoder's layout ([CLS] x [SEP], <s> x </s>) works.
        probe = tokenizer("hello")["input_ids"]
        inner = tokenizer("hello", add_special_tokens=False)["input_ids"]
        front = next(i for i in range(len(probe)) if probe[i:i + len(inner)] == inner)
        back = len(probe) - front - len(inner)
        budget = data.max_length - front - back
        head = budget // 4
        encoded = tokenizer(texts, truncation=False, verbose=False)
        features: dict[str, list] = {key: [] for key in encoded}
        for row in range(len(texts)):
            n = len(encoded["input_ids"][row])
            keep = list(range(n)) if n <= data.max_length else [
                *range(front + head), *range(n - back - (budget - head), n)]
            for key in encoded:
                features[key].append([encoded[key][row][i] for i in keep])
        return features
    return tokenizer(texts, truncation=True, max_length=data.max_length)


def by_document(logits, label_ids, documents, how: str):
    """Window logits (and labels) as one row per document, in the order documents first appear: logits
    averaged or maxed over the document's windows, labels from its first window."""
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
    documents = np.asarray(documents)
    order, first, inverse = np.unique(documents, return_index=True, return_inverse=True)
    flat = logits.reshape(len(documents), -1)
    if how == "max":
        pooled = np.full((len(order), flat.shape[1]), -np.inf)
        np.maximum.at(pooled, inverse, flat)
    else:
        pooled = np.zeros((len(order), flat.shape[1]))
        np.add.at(pooled, inverse, flat)
        pooled /= np.bincount(inverse)[:, None]
    appearance = np.argsort(first)
    pooled = pooled[appearance].reshape((len(order), *logits.shape[1:]))
    labels = None if label_ids is None else np.asarray(label_ids)[np.sort(first)]
    return pooled, labels
