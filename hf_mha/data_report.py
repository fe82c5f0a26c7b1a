"""What `validate` and `train` say about the data before training: per split the number of examples, the label
counts and the share cut at max_length, and one warning line for each thing that looks wrong but is not an
error (a label with stray whitespace, much truncation, a label train never has, CoNLL sentences that seem merged,
a PEFT learning rate below its usual range)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .data import file_format
from .recipe import Recipe

#: Examples tokenized per split to measure truncation: enough for a share to +-1.5 points, seconds on any split.
SAMPLE = 4000
#: Warn when more than this share of the examples is cut at max_length.
TRUNCATED_SHARE = 0.10
#: Labels shown per split; the rest are counted.
SHOWN_LABELS = 12
#: More words than this per sentence, on average, looks like sentences merged by missing blank lines.
LONG_SENTENCE_WORDS = 100


@dataclass
class SplitReport:
    split: str
    examples: int
    label_counts: dict | None
    truncated: int | None  # of `measured` examples, how many are longer than max_length
    measured: int

    def line(self, max_length: int) -> str:
        parts = [f"{self.examples:,} examples"]
        if self.label_counts:
            shown = list(self.label_counts.items())[:SHOWN_LABELS]
            rest = len(self.label_counts) - len(shown)
            parts.append("labels " + ", ".join(f"{label}: {count:,}" for label, count in shown)
                         + (f", … {rest} more" if rest else ""))
        if self.truncated is not None:
            sample = "" if self.measured == self.examples else f" (of {self.measured:,} sampled)"
            parts.append(f"{self.truncated / self.measured:.1%} over max_length {max_length}{sample}")
        return "; ".join(parts)


def split_reports(recipe: Recipe, task, raw, tokenizer) -> list[SplitReport]:
    reports = []
    for split, ds in raw.items():
        step = -(-len(ds) // SAMPLE)  # ceil: at most SAMPLE examples
        sample = ds.select(range(0, len(ds), step)) if step > 1 else ds  # evenly spread, the same every time
        lengths = task.token_counts(sample, tokenizer, recipe)
        truncated = None if lengths is None else sum(n > recipe.data.max_length for n in lengths)
        reports.append(SplitReport(split, len(ds), task.label_counts(ds, recipe), truncated, len(sample)))
    return reports


def data_warnings(recipe: Recipe, raw, reports: list[SplitReport], tuning, learning_rate: float) -> list[str]:
    data, warnings = recipe.data, []
    by_split = {report.split: report for report in reports}
    for report in reports:
        for label in report.label_counts or {}:
            if isinstance(label, str) and label != label.strip():
                warnings.append(f"data: label {label!r} in the {report.split} split has leading or trailing whitespace; "
                                f"it is a different label from {label.strip()!r}")
    cut = [f"{r.truncated / r.measured:.0%} of {r.split}" for r in reports
           if r.truncated is not None and r.truncated > TRUNCATED_SHARE * r.measured]
    if cut and data.long_text == "truncate":  # head_tail cuts on purpose; windows cut nothing
        warnings.append(
            f"data.max_length: {', '.join(cut)} examples are longer than {data.max_length} tokens and will be cut; "
            "raise data.max_length (up to the model's limit)"
        )
    trained = set((by_split["train"].label_counts or {}) if "train" in by_split else {})
    for report in reports:
        if report.split != "train" and trained and report.label_counts:
            unseen = [label for label in report.label_counts if label not in trained]
            if unseen:
                warnings.append(f"data: label {unseen[0]!r}" + (f" (and {len(unseen) - 1} more)" if len(unseen) > 1 else "")
                                + f" in the {report.split} split never occurs in train; the model cannot learn it")
    warnings += _conll_warnings(recipe, raw)
    usual = tuning.usual_learning_rate()
    if usual is not None and learning_rate < usual:
        warnings.append(
            f"train.learning_rate: {learning_rate:g} is below the usual range for {tuning.method} (from about {usual:g}); "
            f"adapters learn slowly at full fine-tuning rates: try train.learning_rate={10 * usual:g}"
        )
    return warnings


def _conll_warnings(recipe: Recipe, raw) -> list[str]:
    """Sentences that look merged: fewer than the file's blank-line blocks, or implausibly long."""
    data, warnings = recipe.data, []
    if recipe.task != "token-classification" or data.files is None:
        return warnings
    for split, path in vars(data.files).items():
        if not path or split not in raw or not Path(path).is_file():
            continue
        if file_format(Path(path), f"data.files.{split}", data.format) != "conll":
            continue
        blocks = conll_blocks(Path(path))
        expected = blocks * (1 - data.validation_fraction) if split == "train" and not data.files.validation else blocks
        limit = data.max_train_samples if split == "train" else data.max_eval_samples
        expected = min(expected, limit or expected)
        sentences = len(raw[split])
        if sentences < 0.5 * expected:
            warnings.append(f"data.files.{split}: {sentences:,} sentences read but the file has {blocks:,} blocks "
                            "between blank lines; check the sentence separators")
        words = sum(len(tokens) for tokens in raw[split][data.token_column][:]) if data.token_column in raw[split].column_names else 0
        if sentences and words / sentences > LONG_SENTENCE_WORDS:
            warnings.append(f"data.files.{split}: sentences average {words / sentences:.0f} words; are the blank lines "
                            "between sentences missing?")
    return warnings


def conll_blocks(path: Path) -> int:
    """Runs of lines between blank (or whitespace-only) lines, not counting `-DOCSTART-` markers on their own."""
    text = path.read_text(encoding="utf-8", errors="replace")
    blocks = [block for block in re.split(r"\n[ \t\r]*\n", text) if block.strip()]
    return sum(1 for block in blocks if not all(line.startswith("-DOCSTART-") or not line.strip()
                                                for line in block.splitlines()))


def check_data(recipe: Recipe):
    """Read the recipe's splits and check their columns and labels, as `train` does before it loads the model:
    for commands that train many runs (`search`, `cv`), before they write anything. Returns the splits."""
    from .data import load_raw
    from .tasks import get_task

    raw = load_raw(recipe)
    get_task(recipe.task).labels(raw, recipe)
    return raw

