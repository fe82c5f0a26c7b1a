"""The recipe's splits as a `datasets.DatasetDict`: local files or a hub dataset, a validation split held out
of train when there is none, sample limits applied."""

from __future__ import annotations

import random
from collections import Counter

import datasets
from datasets import Dataset, DatasetDict

from ..errors import UserError
from ..recipe import DataSection, Recipe
from .columns import require_columns
from .files import read_file, data_file, short_reason


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
    raise UserError(f"data.dataset: cannot load '{name}' from the hub: {short_reason(last_error)}{hint}")


def load_raw(recipe: Recipe) -> DatasetDict:
    """The recipe's splits (train / validation / test, as available), sample limits applied."""
    data = recipe.data
    if data.files is not None and any(vars(data.files).values()):
        splits = {
            split: read_file(data_file(path, f"data.files.{split}"), f"data.files.{split}", data)
            for split, path in vars(data.files).items()
            if path
        }
        raw = DatasetDict(splits)
    elif data.dataset:
        hub = load_hub(data)
        if data.test_split is None and data.validation_split != "test":
            hub.pop("test", None)
        renames = {"validation": None, "test": None, data.validation_split: "validation"}
        if data.test_split is not None:
            renames[data.test_split] = "test"
        # Only the three splits: others (IMDB's unlabelled "unsupervised") are not ours to check or score.
        raw = DatasetDict({renames.get(name, name): split for name, split in hub.items()
                           if renames.get(name, name) in ("train", "validation", "test")})
    else:
        raise UserError("data: give data.dataset (hub name) or data.files.train (a local file)")
    if "train" not in raw:
        raise UserError(f"data: no train split (found: {', '.join(raw) or 'none'}); set data.files.train")
    seed = int(recipe.train.get("seed", 42))
    if data.cv_folds is not None:
        raw["train"], raw["validation"] = fold_split(raw["train"], data, seed)
    elif "validation" not in raw:
        if data.validation_group:
            raw["train"], raw["validation"] = split_by_group(raw["train"], data.validation_group, data.validation_fraction, seed)
        else:
            if len(raw["train"]) < 2:
                raise UserError("data: one training example is too few to hold out a validation split; give data.files.validation")
            parts = raw["train"].train_test_split(test_size=data.validation_fraction, seed=seed)
            raw["train"], raw["validation"] = parts["train"], parts["test"]
    return DatasetDict({split: _limited(split, ds, data) for split, ds in raw.items()})


def _limited(split: str, ds: Dataset, data: DataSection) -> Dataset:
    """The split cut to its sample limit (max_train_samples for train, max_eval_samples otherwise)."""
    limit = data.max_train_samples if split == "train" else data.max_eval_samples
    if limit is not None and len(ds) > limit:
        ds = ds.select(range(limit))
    if len(ds) == 0:
        raise UserError(f"data: the {split} split is empty; check the file or the sample limits")
    return ds


def load_split(recipe: Recipe, split: str) -> Dataset:
    """One split of the recipe's data, for scoring a trained model. From local files only that split's file is
    read, so a run folder stays usable for the splits whose files are still there; a validation split that was
    held out of train needs the train file, and a hub dataset is loaded whole."""
    files = recipe.data.files
    given = {name: path for name, path in vars(files).items() if path} if files is not None else {}
    if recipe.data.cv_folds is not None:  # a fold's validation is a part of train, not the validation file
        given.pop("validation", None)
    if split in given:
        path = data_file(given[split], f"data.files.{split}")
        return _limited(split, read_file(path, f"data.files.{split}", recipe.data), recipe.data)
    # Without its own file, a split is train's held-out validation part or one of a hub dataset's splits.
    have = [*given, *([] if "validation" in given else ["validation"])] if given else None
    if have is None or split in have:
        raw = load_raw(recipe)
        have = list(raw)
    if split not in have:
        raise UserError(f"--split: no '{split}' split in the data (have: {', '.join(have)})")
    return raw[split]


def fold_split(ds: Dataset, data: DataSection, seed: int) -> tuple[Dataset, Dataset]:
    """Fold `data.cv_fold` of `data.cv_folds` (seeded, shuffled) as validation, the others as train: stratified by
    the label when it is one class per example, whole groups together with `data.validation_group`."""
    import warnings

    import numpy as np
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    folds, where = data.cv_folds, "data.cv_folds"
    if len(ds) < folds:
        raise UserError(f"{where}: {folds} folds of {len(ds)} training examples; use at most {len(ds)} folds")
    labels = ds[data.label_column][:] if data.label_column in ds.column_names else None
    stratified = labels is not None and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in labels)
    y = np.array([str(v) for v in labels] if stratified else [0] * len(ds))
    if data.validation_group:
        require_columns(ds, [data.validation_group], "train", "data.validation_group")
        groups = [str(v) for v in ds[data.validation_group][:]]
        if len(set(groups)) < folds:
            raise UserError(f"{where}: {folds} folds but only {len(set(groups))} '{data.validation_group}' groups "
                            f"(data.validation_group); use at most {len(set(groups))} folds")
        splitter, split_args = StratifiedGroupKFold(folds, shuffle=True, random_state=seed), (y, groups)
    elif stratified:
        splitter, split_args = StratifiedKFold(folds, shuffle=True, random_state=seed), (y,)
    else:
        splitter, split_args = KFold(folds, shuffle=True, random_state=seed), ()
    with warnings.catch_warnings():  # a label rarer than the folds: some folds lack it, as the counts show
        warnings.simplefilter("ignore", UserWarning)
        train, validation = list(splitter.split(np.zeros(len(ds)), *split_args))[data.cv_fold]
    return ds.select(sorted(train)), ds.select(sorted(validation))


def split_by_group(ds: Dataset, column: str, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out whole groups (seeded) until they reach `fraction` of the rows; train keeps at least one group."""
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
