"""Column checks shared by every task's data."""

from __future__ import annotations

from datasets import Dataset

from ..errors import UserError, did_you_mean

#: A column name longer than this is a sentence, not a name: the file's first row was data.
LONGEST_NAME = 40


def looks_like_data(names: list[str]) -> bool:
    """Whether column names look like a data row read as a header: a number, or a name of sentence length."""
    def is_number(name: str) -> bool:
        try:
            float(name)
            return True
        except ValueError:
            return False

    return any(is_number(str(name)) or len(str(name)) > LONGEST_NAME for name in names)


def require_columns(ds: Dataset, columns: list[str], split: str, key: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            shown = ", ".join(name if len(name) <= LONGEST_NAME else name[:LONGEST_NAME] + "…" for name in ds.column_names)
            headerless = (
                "; the file seems to have no header row: read it with data.header=false "
                f"data.column_names=[{', '.join(f'col{i}' for i in range(1, len(ds.column_names) + 1))}] "
                "(your names, in file order)"
            ) if looks_like_data(ds.column_names) else ""
            raise UserError(
                f"{key}: column '{column}' not in the {split} data{did_you_mean(column, ds.column_names)}; "
                f"columns: {shown}{headerless}"
            )
