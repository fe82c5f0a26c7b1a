"""Column checks shared by every task's data."""

from __future__ import annotations

from datasets import Dataset

from ..errors import UserError, did_you_mean


def require_columns(ds: Dataset, columns: list[str], split: str, key: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise UserError(
                f"{key}: column '{column}' not in the {split} data{did_you_mean(column, ds.column_names)}; "
                f"columns: {', '.join(ds.column_names)}"
            )
