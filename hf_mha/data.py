"""Getting raw examples into a `datasets.DatasetDict`: hub datasets and local files.

Local formats are chosen by extension: .csv, .tsv, .json/.jsonl, .parquet, and CoNLL column files
(.conll/.iob/.iob1/.iob2/.txt and CoNLL-2003's eng.train style names) for token classification. Relative
paths are looked up in the current folder first, then beside the recipe file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict

from .errors import UserError
from .recipe import DataSection, Recipe, did_you_mean
from .tasks.question_answering import is_squad_json, read_squad

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
            raise UserError(f"{key}: cannot read {path} as {suffix[1:]}: {_short(exc)}") from None
    elif suffix in CONLL_SUFFIXES or path.name.startswith(("eng.", "deu.")):
        from .tasks.token_classification import read_conll

        loaded = read_conll(path)
    else:
        known = ", ".join(sorted(set(TABULAR) | CONLL_SUFFIXES))
        raise UserError(f"{key}: unknown file type '{suffix or path.name}' for {path}; use one of {known}")
    if len(loaded) == 0:
        raise UserError(f"{key}: {path} holds no examples; point it at a non-empty file")
    return loaded


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def load_hub(data: DataSection) -> DatasetDict:
    """`name`, `name/config` or `org/name/config`; `data.config` wins when given."""
    name, config = data.dataset, data.config
    attempts = [(name, config)]
    if config is None and name.count("/") in (1, 2):
        head, tail = name.rsplit("/", 1)
        attempts = [(name, None), (head, tail)] if name.count("/") == 1 else [(head, tail)]
    last_error: Exception | None = None
    for hub_name, hub_config in attempts:
        try:
            return datasets.load_dataset(hub_name, hub_config)
        except Exception as exc:  # ConnectionError, DatasetNotFoundError, ValueError(config) ...
            last_error = exc
    offline = "offline" in str(last_error).lower() or "connect" in str(last_error).lower()
    hint = " — the hub needs the internet; use data.files.* for local files" if offline else ""
    raise UserError(f"data.dataset: cannot load '{name}' from the hub: {_short(last_error)}{hint}")


def load_raw(recipe: Recipe) -> DatasetDict:
    """The recipe's splits (train / validation / test, as available), sample limits applied."""
    data = recipe.data
    if data.files is not None and any(vars(data.files).values()):
        splits = {
            split: read_file(resolve_data_path(path, recipe, f"data.files.{split}"), f"data.files.{split}")
            for split, path in vars(data.files).items()
            if path
        }
        raw = DatasetDict(splits)
    elif data.dataset:
        hub = load_hub(data)
        if data.test_split is None:
            hub.pop("test", None)
        renames = {data.validation_split: "validation", data.test_split: "test"}
        raw = DatasetDict({renames.get(name, name): split for name, split in hub.items()})
    else:
        raise UserError("data: give data.dataset (hub name) or data.files.train (a local file)")
    if "train" not in raw:
        raise UserError(f"data: no train split (found: {', '.join(raw) or 'none'}); set data.files.train")
    if "validation" not in raw:
        seed = int(recipe.train.get("seed", 42))
        if data.validation_group:
            raw["train"], raw["validation"] = split_by_group(raw["train"], data.validation_group, data.validation_fraction, seed)
        else:
            if len(raw["train"]) < 2:
                raise UserError("data: one training example is too few to hold out a validation split; give data.files.validation")
            parts = raw["train"].train_test_split(test_size=data.validation_fraction, seed=seed)
            raw["train"], raw["validation"] = parts["train"], parts["test"]
    for split, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples), ("test", data.max_eval_samples)):
        if limit is not None and split in raw and len(raw[split]) > limit:
            raw[split] = raw[split].select(range(limit))
    for split, ds in raw.items():
        if len(ds) == 0:
            raise UserError(f"data: the {split} split is empty; check the file or the sample limits")
    return raw


def split_by_group(ds: Dataset, column: str, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out whole groups (seeded) until they reach `fraction` of the rows; train keeps at least one group."""
    import random
    from collections import Counter

    require_columns(ds, [column], "train", "data.validation_group")
    values = ds[column]
    sizes = Counter(values)
    groups = list(sizes)
    if len(groups) < 2:
        raise UserError(f"data.validation_group: the train data has only one '{column}' value; give data.files.validation")
    random.Random(seed).shuffle(groups)
    held_out, count = set(), 0
    for group in groups[:-1]:
        if count >= fraction * len(values):
            break
        held_out.add(group)
        count += sizes[group]
    in_validation = [value in held_out for value in values]
    train = [i for i, flag in enumerate(in_validation) if not flag]
    validation = [i for i, flag in enumerate(in_validation) if flag]
    return ds.select(train), ds.select(validation)


def require_columns(ds: Dataset, columns: list[str], split: str, key: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise UserError(
                f"{key}: column '{column}' not in the {split} data{did_you_mean(column, ds.column_names)}; "
                f"columns: {', '.join(ds.column_names)}"
            )


def read_inputs(path: str) -> Dataset:
    """Inputs for `mha-ft predict` / `eval --file`: any format read_file knows."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--input: file not found: {path}")
    return read_file(file, "--input")
