"""Readers: raw examples from hub datasets and local files (csv/tsv/json/jsonl/parquet, CoNLL, SQuAD), and the
column checks every task uses. Tasks import from here; nothing here knows about tasks."""

from .columns import require_columns
from .conll import read_conll
from .files import FORMATS, TABULAR, data_file, file_format, read_file, read_inputs
from .splits import load_raw, load_split, split_by_group
from .squad import is_squad_json, read_squad

__all__ = [
    "FORMATS", "TABULAR", "file_format", "is_squad_json", "load_raw", "load_split", "read_conll", "read_file", "read_inputs", "read_squad",
    "require_columns", "data_file", "split_by_group",
]
