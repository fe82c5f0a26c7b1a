"""The bad-input catalogue: every entry ends in one line on stderr, exit code 2, nothing written or overwritten.

docs/bad-inputs.md lists the same entries with the message a user sees; regenerate it with
`MHA_FT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k write_doc` after adding one (a test checks
that every entry is there).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from hf_mha.run_folder import COMPLETE_MARKER, LOCK_FILE

sys.path.insert(0, str(Path(__file__).parent))
from conftest import INTENT_EXAMPLES, write_jsonl  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@dataclass
class Case:
    id: str
    what: str
    args: Callable[["Env"], list[str]]
    expect: str


@dataclass
class Env:
    tmp: Path
    model: Path
    files: dict[str, Path]
    run: Path  # a finished run
    out: Path  # an output_dir that must stay absent
    regression: Path  # float labels

    def train(self, *overrides: str) -> list[str]:
        return ["train", "--recipe", "quickstart", f"model.name={self.model}",
                *(f"data.files.{s}={p}" for s, p in self.files.items()), f"output_dir={self.out}", *overrides]

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return path

    def copy_run(self, name: str) -> Path:
        """A second finished run: a copy of the first."""
        import shutil

        target = self.tmp / name
        if not target.exists():
            shutil.copytree(self.run, target)
        return target

    def prefix_run(self) -> Path:
        """A finished run as a prefix-tuning run leaves it, as far as export reads before loading: its recipe and
        the marker of a PEFT adapter."""
        folder = self.copy_run("prefix-run")
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
        recipe |= {"tuning": {"method": "prefix", "num_virtual_tokens": 4}, "output_dir": str(folder)}
        recipe["model"]["attention"] = "stock"  # as a prefix run saves it: prefixes need the stock attention
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        (folder / "adapter_config.json").write_text("{}")
        return folder

    def recipe(self, name: str, text: str | bytes) -> list[str]:
        return ["train", "--recipe", str(self.write(name, text))]

    def unfinished(self, name: str, lock_pid: int | None = None) -> Path:
        """A run folder as a killed `train` leaves it: the finished run's recipe, one complete checkpoint, no
        metrics.json, and (with lock_pid) the lock of a process that is still writing it."""
        folder = self.tmp / name
        (folder / "checkpoint-2").mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint-2" / COMPLETE_MARKER).write_text("")
        recipe = yaml.safe_load((self.run / "recipe.yaml").read_text()) | {"output_dir": str(folder)}
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        if lock_pid is not None:
            (folder / LOCK_FILE).write_text(json.dumps({"pid": lock_pid, "host": socket.gethostname(), "since": "now"}))
        return folder


HEADER_ONLY_CSV = "text,label\n"
BROKEN_JSONL = '{"text": "a", "label": "x"}\n{oops\n'
GREETING_ROW = '{"text": "hi", "label": "greeting"}\n'
ONE_LABEL_ROW = '{"text": "hi", "label": "a"}\n'
TWO_LABEL_ROWS = '{"text": "hi", "label": "a"}\n{"text": "yo", "label": "b"}\n'
NULL_LABEL_ROWS = TWO_LABEL_ROWS + '{"text": "x", "label": null}\n'
EMPTY_LABEL_ROWS = TWO_LABEL_ROWS + '{"text": "x", "label": ""}\n'
INT_LABEL_CSV_WITH_EMPTY_CELL = "text,label\nhi,0\nyo,1\nhey,\nho,0\n"
HEADERLESS_TSV = "where is my parcel, it is three weeks late now\tstatus\nrefund me\trefund\nreset my password\taccount\n" * 2
MULTI_LABEL_ROWS = '{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": ["y"]}\n'
MULTI_LABEL_UNKNOWN = '{"text": "c", "label": ["z"]}\n'
BLANK_TEXT_ROWS = '{"text": "", "label": "a"}\n{"text": " ", "label": "b"}\n'
DUPLICATE_KEY_RECIPE = "task: text-classification\nmodel:\n  name: x\ntask: token-classification\n"
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefg", "bcdefgh")
)
SQUAD_ROW = {"id": "q1", "title": "t", "context": "the cat sat on the mat", "question": "where did the cat sit?"}


def squad_rows(start: int) -> str:
    """Ten questions whose answer "the mat" is at character 15; any other start misses it."""
    return "".join(json.dumps(SQUAD_ROW | {"id": f"q{i}", "answers": {"text": ["the mat"], "answer_start": [start]}}) + "\n"
                   for i in range(10))

CATALOGUE = [
    # --- recipe
    Case("unknown-section", "a misspelt section", lambda e: e.train("modle.name=x"), "unknown key 'modle' (did you mean 'model'?)"),
    Case("unknown-key", "a misspelt key inside a section", lambda e: e.train("data.text_column=[a]"),
         "unknown key 'data.text_column' (did you mean 'text_columns'?)"),
    Case("unknown-training-argument", "a misspelt TrainingArguments key", lambda e: e.train("train.learnig_rate=1e-4"),
         "train.learnig_rate: unknown TrainingArguments key (did you mean 'learning_rate'?)"),
    Case("removed-training-argument", "a TrainingArguments key transformers v5 removed",
         lambda e: e.train("train.warmup_ratio=0.1"), "train.warmup_ratio: unknown TrainingArguments key (did you mean 'warmup_steps'?)"),
    Case("training-argument-type", "a TrainingArguments value of the wrong type", lambda e: e.train("train.learning_rate=fast"),
         "train.learning_rate must be float, got 'fast'"),
    Case("training-argument-conflict", "TrainingArguments that contradict each other",
         lambda e: e.train("train.eval_strategy=epoch", "train.save_strategy=steps", "train.save_steps=7"),
         "train: --load_best_model_at_end requires the save and eval strategy to match"),
    Case("tuning-option", "a misspelt tuning option, caught before the data loads (here the data file is missing too)",
         lambda e: e.train("tuning.method=lora", "tuning.rank=8", f"data.files.train={e.tmp / 'missing.jsonl'}"),
         "tuning.rank: not an option of method lora"),
    Case("section-type", "a section value of the wrong type", lambda e: e.train("data.max_length=long"),
         "data.max_length: Input should be a valid integer"),
    Case("out-of-range", "a value out of range", lambda e: e.train("data.max_length=0"), "data.max_length: Input should be greater than 0"),
    Case("bad-choice", "a value outside its choices", lambda e: e.train("model.attention=fast"),
         "model.attention: Input should be 'stock' or 'mha'"),
    Case("bad-task", "an unknown task", lambda e: e.train("task=translation"), "task: Input should be"),
    Case("three-text-columns", "more than two text columns", lambda e: e.train("data.text_columns=[a,b,c]"),
         "give one text column, or two for sentence pairs"),
    Case("train-output-dir", "the run folder set under train:", lambda e: e.train("train.output_dir=x"),
         "train.output_dir: set the run folder with the top-level key output_dir"),
    Case("train-bf16-and-fp16", "two mixed precisions at once", lambda e: e.train("train.bf16=true", "train.fp16=true"),
         "train.bf16 and train.fp16 are both true; pick one precision (bf16: auto picks for you)"),
    Case("train-bf16-word", "bf16 neither a boolean nor auto", lambda e: e.train("train.bf16=sometimes"),
         "train.bf16 must be true, false or auto, got 'sometimes'"),
    Case("validation-fraction", "a held-out fraction outside (0, 1)", lambda e: e.train("data.validation_fraction=1.5"),
         "data.validation_fraction: Input should be less than 1"),
    Case("sample-limit", "a sample limit of zero", lambda e: e.train("data.max_train_samples=0"),
         "data.max_train_samples: Input should be greater than 0"),
    Case("learning-rate-zero", "a learning rate of 0", lambda e: e.train("train.learning_rate=0"),
         "train.learning_rate must be > 0, got 0"),
    Case("batch-size-zero", "a batch size of 0", lambda e: e.train("train.per_device_train_batch_size=0"),
         "train.per_device_train_batch_size must be at least 1, got 0"),
    Case("no-epochs-no-steps", "zero epochs and no max_steps", lambda e: e.train("train.num_train_epochs=0"),
         "train.num_train_epochs must be > 0, or set train.max_steps > 0"),
    Case("grad-norm-not-number", "max_grad_norm that is not a number", lambda e: e.train("train.max_grad_norm=big"),
         "train.max_grad_norm must be float, got 'big'"),
    Case("accumulation-zero", "gradient accumulation of 0 steps", lambda e: e.train("train.gradient_accumulation_steps=0"),
         "train.gradient_accumulation_steps must be at least 1"),
    Case("negative-seed", "a seed below 0", lambda e: e.train("train.seed=-1"), "train.seed must be between 0 and 2**32 - 1"),
    Case("duplicate-key", "a recipe that sets one key twice", lambda e: e.recipe("dup.yaml", DUPLICATE_KEY_RECIPE),
         "dup.yaml:4: key 'task' is given twice in one section (first at line 1)"),
    Case("not-utf8", "a recipe file that is not UTF-8 text",
         lambda e: e.recipe("latin1.yaml", "task: text-classification\nmodel:\n  name: caf\xe9\n".encode("latin-1")),
         "latin1.yaml: not UTF-8 text (invalid continuation byte at byte 44)"),
    Case("alias-bomb", "a recipe whose YAML aliases expand to billions of values",
         lambda e: e.recipe("bomb.yaml", ALIAS_BOMB), "its YAML aliases expand to more than 100,000 values"),
    Case("oversized-value", "a recipe value of megabytes, refused without echoing it",
         lambda e: e.recipe("huge.yaml", "task: text-classification\nmodel:\n  name: " + "x" * 200_000 + "\n"),
         "a value of 200,000 characters"),
    Case("invalid-yaml", "a recipe that is not valid YAML",
         lambda e: ["train", "--recipe", str(e.write("broken.yaml", "task: text-classification\nmodel:\n  name: [x\n"))],
         "not valid YAML"),
    Case("recipe-not-mapping", "a recipe that is a list, not a mapping",
         lambda e: ["train", "--recipe", str(e.write("list.yaml", "- task\n- model\n"))], "a recipe is a YAML mapping"),
    Case("unknown-recipe", "a recipe name that is neither a file nor built in", lambda e: ["train", "--recipe", "quickstrat"],
         "did you mean 'quickstart'?"),
    Case("override-without-equals", "an override that is not key=value", lambda e: e.train("train.learning_rate"),
         "is not key=value"),
    Case("override-empty-key", "an override with an empty key part", lambda e: e.train("train..seed=1"), "has an empty key"),
    Case("override-into-value", "an override that treats a value as a section", lambda e: e.train("output_dir.x=1"),
         "holds a value, not a section"),
    Case("unknown-metric", "a metric name that is not available offline", lambda e: e.train("eval.metrics=[acuracy]"),
         "metric 'acuracy' is not available offline (did you mean 'accuracy'?)"),
    Case("regression-metric-mismatch", "a class metric on a regression task",
         lambda e: e.train("data.problem_type=regression", "data.files.test=null", f"data.files.train={e.regression}",
                           f"data.files.validation={e.regression}", "eval.metrics=[accuracy]"),
         "'accuracy' scores class labels but this task is regression"),
    # --- data
    Case("missing-file", "a data file that does not exist", lambda e: e.train("data.files.train=/nonexistent/train.csv"),
         "data.files.train: file not found"),
    Case("unknown-extension", "a data file of an unknown type", lambda e: e.train(f"data.files.train={e.write('d.xlsx', 'x')}"),
         "cannot tell the format of"),
    Case("unknown-format", "a data.format that is not one", lambda e: e.train("data.format=xlsx"),
         "data.format: Input should be 'auto', 'csv', 'tsv', 'json', 'jsonl', 'parquet', 'conll' or 'squad'"),
    Case("headerless-table", "a tsv without a header row, read as if it had one",
         lambda e: e.train(f"data.files.train={e.write('nohead.tsv', HEADERLESS_TSV)}", "data.files.validation=null",
                           "data.files.test=null"),
         "the file seems to have no header row: read it with data.header=false data.column_names=[col1, col2]"),
    Case("header-false-without-names", "data.header false without data.column_names", lambda e: e.train("data.header=false"),
         "data.header: false needs data.column_names"),
    Case("column-names-width", "data.column_names that do not name every column",
         lambda e: e.train(f"data.files.train={e.write('nohead.tsv', HEADERLESS_TSV)}", "data.header=false",
                           "data.column_names=[text]"),
         "data.column_names: 1 name (text) but"),
    Case("header-only-csv", "a CSV file with a header and no rows",
         lambda e: e.train(f"data.files.train={e.write('empty.csv', HEADER_ONLY_CSV)}"), "holds no examples"),
    Case("empty-jsonl", "an empty JSON lines file", lambda e: e.train(f"data.files.train={e.write('empty.jsonl', '')}"),
         "holds no examples"),
    Case("malformed-json", "a JSON lines file with a broken line, named by its line number",
         lambda e: e.train(f"data.files.train={e.write('bad.jsonl', BROKEN_JSONL)}"),
         "bad.jsonl:2: not valid JSON"),
    Case("null-label", "a row whose label is null",
         lambda e: e.train(f"data.files.train={e.write('null.jsonl', NULL_LABEL_ROWS)}"),
         "row 3 of the train split (text 'x') has no label"),
    Case("empty-label", "a row whose label is an empty string",
         lambda e: e.train(f"data.files.train={e.write('emptylabel.jsonl', EMPTY_LABEL_ROWS)}"),
         "row 3 of the train split (text 'x') has no label"),
    Case("empty-int-label-cell", "a CSV of integer labels with one cell left empty (no silent switch to regression)",
         lambda e: e.train(f"data.files.train={e.write('cells.csv', INT_LABEL_CSV_WITH_EMPTY_CELL)}",
                           "data.files.validation=null", "data.files.test=null", "data.validation_fraction=0.3"),
         "has no label"),
    Case("all-empty-texts", "a train split whose texts are all empty",
         lambda e: e.train(f"data.files.train={e.write('blank.jsonl', BLANK_TEXT_ROWS)}"),
         "empty"),
    Case("qa-answer-offsets", "QA answers whose answer_start does not point at the answer text",
         lambda e: ["train", "--recipe", "squad-full", f"model.name={e.model}", "data.dataset=null",
                    f"data.files.train={e.write('squad.jsonl', squad_rows(3))}", f"data.files.validation={e.tmp / 'squad.jsonl'}",
                    "data.max_length=64", "data.doc_stride=16", f"output_dir={e.out}"],
         "10 of 10 answers in the train split are not where answer_start says (first: question 'q0'"),
    Case("class-weights-unknown-label", "class weights naming a label the data does not have",
         lambda e: e.train("train.class_weights={greeting: 3}"), "train.class_weights: 'greeting' is not a label"),
    Case("class-weights-not-positive", "a class weight of zero", lambda e: e.train("train.class_weights={refund: 0}"),
         "the weight of 'refund' must be a number > 0"),
    Case("threshold-outside", "a multi-label threshold outside (0, 1)", lambda e: e.train("eval.threshold=1.5"),
         "eval.threshold: Input should be less than 1"),
    Case("multi-label-unknown-label", "a multi-label validation row with a label train never has",
         lambda e: e.train(f"data.files.train={e.write('ml.jsonl', MULTI_LABEL_ROWS)}",
                           f"data.files.validation={e.write('mlv.jsonl', MULTI_LABEL_UNKNOWN)}", "data.files.test=null"),
         "label 'z' in the validation split (row 1) is not in the label set"),
    Case("early-stopping-without-eval", "early stopping with evaluation turned off",
         lambda e: e.train("train.early_stopping_patience=2", "train.eval_strategy=no", "train.save_strategy=no"),
         "train.early_stopping_patience: needs evaluation"),
    Case("missing-text-column", "a text column the data does not have", lambda e: e.train("data.text_columns=[body]"),
         "column 'body' not in the train data"),
    Case("missing-label-column", "a label column the data does not have", lambda e: e.train("data.label_column=intent"),
         "column 'intent' not in the train data"),
    Case("label-outside-set", "a validation label the training data never has",
         lambda e: e.train(f"data.files.validation={e.write('v.jsonl', GREETING_ROW)}"),
         "label 'greeting' in the validation split (row 1) is not in the label set"),
    Case("single-label", "training data with only one label",
         lambda e: e.train(f"data.files.train={e.write('one.jsonl', ONE_LABEL_ROW)}",
                           f"data.files.validation={e.write('one.jsonl', ONE_LABEL_ROW)}", "data.files.test=null"),
         "only one label"),
    Case("no-data", "neither a hub dataset nor files",
         lambda e: ["train", "--recipe", str(e.write("nodata.yaml", f"model:\n  name: {e.model}\noutput_dir: {e.out}\n"))],
         "give data.dataset (hub name) or data.files.train"),
    Case("no-train-split", "files without a train split", lambda e: e.train("data.files.train=null"), "no train split"),
    Case("max-length-over-positions", "data.max_length beyond the model's position embeddings",
         lambda e: e.train("data.max_length=4096"), "data.max_length: 4096 is more than the 128 positions"),
    Case("model-not-found", "a model folder or hub id that cannot be loaded",
         lambda e: e.train("model.name=/nonexistent/model"), "model.name: cannot load"),
    # --- run folder and CLI
    Case("finished-run", "training into a folder that holds a finished run",
         lambda e: ["train", "--recipe", str(e.run / "recipe.yaml")], "already holds a finished run"),
    Case("foreign-output-dir", "an output_dir that is some other folder",
         lambda e: e.train(f"output_dir={e.write('mine/notes.txt', 'keep me').parent}"), "is not an mha-ft run folder"),
    Case("output-dir-is-file", "an output_dir that is an existing file",
         lambda e: e.train(f"output_dir={e.write('taken.txt', 'keep me')}"), "is a file"),
    Case("resume-other-recipe", "resuming an unfinished run with a recipe that changes the result",
         lambda e: ["train", "--recipe", str(e.unfinished("unfinished-run") / "recipe.yaml"), "train.learning_rate=0.5",
                    "train.seed=7"],
         "holds an unfinished run of another recipe: train.learning_rate (0.0001 in the run, 0.5 now); train.seed (42 in the run, 7 now)"),
    Case("locked-run", "training into a folder another live process is writing",
         lambda e: ["train", "--recipe", str(e.unfinished("locked-run", lock_pid=os.getpid()) / "recipe.yaml")],
         f"is being written by process {os.getpid()} on {socket.gethostname()}"),
    Case("validate-locked-run", "validate of a folder another live process is writing (validate runs train's checks)",
         lambda e: ["validate", "--recipe", str(e.unfinished("locked-run", lock_pid=os.getpid()) / "recipe.yaml")],
         f"is being written by process {os.getpid()}"),
    Case("resume-without-checkpoint", "--resume with nothing to resume", lambda e: [*e.train(), "--resume"],
         "no complete checkpoint"),
    Case("eval-missing-run", "eval of a folder that is not a run", lambda e: ["eval", "--run", "/nonexistent/run"],
         "is not a run folder"),
    Case("eval-unfinished-run", "eval of a run that has not finished",
         lambda e: ["eval", "--run", str(e.write("unfinished/recipe.yaml", "task: text-classification\n").parent)],
         "has not finished training"),
    Case("eval-nothing", "eval with neither --run nor --model", lambda e: ["eval"], "give --run DIR, or --model DIR with --recipe R"),
    Case("eval-unknown-split", "eval of a split the data does not have", lambda e: ["eval", "--run", str(e.run), "--split", "dev"],
         "no 'dev' split"),
    Case("eval-unlabelled-file", "eval of a file without labels",
         lambda e: ["eval", "--run", str(e.run), "--file", str(e.write("nolabels.csv", "text\nhello\n"))],
         "column 'label' not in the nolabels.csv data"),
    Case("heads-max-samples", "head importance on zero examples",
         lambda e: ["heads", "--run", str(e.run), "--importance", "--max-samples", "0"], "--max-samples must be 1 or more"),
    Case("heads-prune-into-run", "pruning into a folder that is not empty, refused before importance is scored",
         lambda e: ["heads", "--run", str(e.run), "--prune", "0.5", "--out", str(e.run)], "exists and is not empty"),
    Case("predict-missing-input", "predict with an input file that does not exist",
         lambda e: ["predict", "--run", str(e.run), "--input", "/nonexistent.jsonl", "--output", str(e.out / "p.jsonl")],
         "--input: file not found"),
    Case("predict-missing-column", "predict input without the recipe's text column",
         lambda e: ["predict", "--run", str(e.run), "--input", str(e.write("in.csv", "body\nhello\n")), "--output", str(e.out / "p.jsonl")],
         "column 'text' not in"),
    Case("search-no-trials", "search with --trials 0", lambda e: ["search", *e.train()[1:], "--trials", "0"],
         "--trials must be 1 or more"),
    Case("search-bad-range", "a search range whose log scale starts at 0",
         lambda e: ["search", *e.train("search.train.learning_rate={log_uniform: [0, 1e-3]}")[1:], "--trials", "2"],
         "search.train.learning_rate: log_uniform needs low > 0"),
    Case("search-invalid-value", "a search choice that makes an invalid recipe",
         lambda e: ["search", *e.train("search.train.per_device_train_batch_size={choice: [8, 0]}")[1:], "--trials", "2"],
         "search.train.per_device_train_batch_size: the value 0 makes an invalid recipe"),
    Case("search-into-a-run", "a search whose output_dir holds a run",
         lambda e: ["search", *e.train(f"output_dir={e.run}")[1:], "--trials", "2"],
         "holds a run; choose a new folder for the search"),
    Case("search-missing-column", "a search on data without the text column, refused before any trial",
         lambda e: ["search", *e.train("data.text_columns=[body]")[1:], "--trials", "2"], "column 'body' not in"),
    Case("cv-one-fold", "cross-validation with one fold", lambda e: ["cv", *e.train()[1:], "--folds", "1"],
         "--folds must be 2 or more"),
    Case("cv-more-folds-than-examples", "more folds than training examples",
         lambda e: ["cv", *e.train()[1:], "--folds", "500"], "data.cv_folds: 500 folds of"),
    Case("distill-teacher-not-a-run", "distillation from a folder that is not a run",
         lambda e: ["distill", "--teacher", str(e.tmp / "no-teacher"), *e.train()[1:]], "distill.teacher:"),
    Case("student-deeper-than-base", "a student with more layers than its model",
         lambda e: e.train("model.num_layers=9"), "model.num_layers: 9 is more than the 2 layers"),
    Case("student-layer-out-of-range", "model.keep_layers naming a layer the model lacks",
         lambda e: e.train("model.keep_layers=[0, 7]"), "model.keep_layers: layer 7 is out of range"),
    Case("compress-nothing", "compress without --layers or --heads",
         lambda e: ["compress", "--run", str(e.run), "--out", str(e.out)], "compress: nothing to do"),
    Case("compress-heads-fraction", "compress --heads that is not a fraction",
         lambda e: ["compress", "--run", str(e.run), "--heads", "2", "--out", str(e.out)], "--heads must be a fraction"),
    Case("compare-one-run", "compare with a single run", lambda e: ["compare", str(e.run)],
         "compare: give two or more finished run folders (got 1)"),
    Case("compare-not-a-run", "compare with a folder that is not a run",
         lambda e: ["compare", str(e.run), str(e.tmp)], "is not a run folder (no recipe.yaml)"),
    Case("compare-unknown-metric", "compare --plot with a metric no run has",
         lambda e: ["compare", str(e.run), str(e.copy_run("run-copy")), "--plot", str(e.tmp / "c.png"), "--metric", "bleu"],
         "--metric: no run has 'eval_bleu'"),
    Case("predict-unknown-format", "predict with a --format that is not one",
         lambda e: ["predict", "--run", str(e.run), "--input", str(e.files["test"]), "--format", "xml", "--output", str(e.out / "p.jsonl")],
         "--format: unknown format 'xml'"),
    Case("predict-output-is-input", "predict with --output the same file as --input",
         lambda e: ["predict", "--run", str(e.run), "--input", str(e.files["test"]), "--output", str(e.files["test"])],
         "test.jsonl is the --input file"),
    Case("predict-output-folder", "predict with --output an existing folder",
         lambda e: ["predict", "--run", str(e.run), "--input", str(e.files["test"]), "--output", str(e.tmp)],
         "is a folder"),
    Case("predict-output-in-run", "predict writing over a file of the run",
         lambda e: ["predict", "--run", str(e.run), "--input", str(e.files["test"]), "--output", str(e.run / "predictions.jsonl")],
         "write the predictions outside the run folder"),
    Case("predict-run-and-model", "predict with both --run and --model",
         lambda e: ["predict", "--run", str(e.run), "--model", str(e.run), "--input", str(e.files["test"]), "--output", str(e.out / "p.jsonl")],
         "predict: give --run DIR or --model DIR, not both"),
    Case("predict-nothing", "predict with neither --run nor --model",
         lambda e: ["predict", "--input", str(e.files["test"]), "--output", str(e.out / "p.jsonl")],
         "predict: give --run DIR, or --model DIR with --recipe R"),
    Case("predict-model-without-recipe", "predict --model on a folder with no recipe.yaml and no --recipe",
         lambda e: ["predict", "--model", str(e.write("bare/config.json", "{}").parent), "--input", str(e.files["test"]), "--output", str(e.out / "p.jsonl")],
         "holds no recipe.yaml; add --recipe R"),
    Case("predict-int8-without-graph", "predict --int8 with a folder that holds no int8 ONNX graph",
         lambda e: ["predict", "--run", str(e.run), "--int8", "--input", str(e.files["test"]), "--output", str(e.out / "p.jsonl")],
         "holds no model.int8.onnx; export the run with mha-ft export --format onnx --quantize int8"),
    Case("export-unknown-format", "export to a format that is not one",
         lambda e: ["export", "--run", str(e.run), "--out", str(e.out), "--format", "tflite"],
         "--format: unknown format 'tflite'; choose transformers or onnx"),
    Case("export-quantize-without-onnx", "export --quantize without --format onnx",
         lambda e: ["export", "--run", str(e.run), "--out", str(e.out), "--quantize", "int8"],
         "--quantize int8 needs --format onnx"),
    Case("export-onnx-unmergeable", "export --format onnx of a prefix-tuning run (no single graph), refused before loading",
         lambda e: ["export", "--run", str(e.prefix_run()), "--out", str(e.out), "--format", "onnx"],
         "cannot be one ONNX graph: prefix adds virtual tokens to the input"),
    Case("cp-unknown", "copying a recipe that is not built in", lambda e: ["cp", "quickstrt", str(e.out)],
         "no built-in recipe 'quickstrt' (did you mean 'quickstart'?)"),
    Case("cp-existing", "copying over an existing file", lambda e: ["cp", "quickstart", str(e.write("exists.yaml", "x"))],
         "already exists"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir) -> Env:
    from hf_mha_cli.main import main

    tmp = tmp_path_factory.mktemp("bad")
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    files = {s: write_jsonl(tmp / f"{s}.jsonl", rows) for s in ("train", "validation", "test")}
    run = tmp / "finished"
    with pytest.raises(SystemExit) as done:
        main(["train", "--recipe", "quickstart", f"model.name={tiny_model_dir}",
              *(f"data.files.{s}={p}" for s, p in files.items()), "train.num_train_epochs=1", "train.use_cpu=true",
              f"output_dir={run}"])
    assert done.value.code in (0, None)
    regression = write_jsonl(tmp / "regression.jsonl", [{"text": t, "label": i / 10} for i, (t, _) in enumerate(INTENT_EXAMPLES)])
    return Env(tmp=tmp, model=tiny_model_dir, files=files, run=run, out=tmp / "must-not-exist", regression=regression)


def run_case(case: Case, env: Env) -> tuple[int, str]:
    """Run one catalogue entry through the real entry point; return (exit code, stderr)."""
    import contextlib
    import io

    from hf_mha_cli.main import main

    stderr = io.StringIO()
    args = case.args(env)
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, stderr.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input(case: Case, env: Env):
    before = _snapshot(env.run)
    code, stderr = run_case(case, env)
    assert code == 2, stderr
    assert case.expect in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not env.out.exists(), "a failed command must not create its output folder"
    assert _snapshot(env.run) == before, "a failed command must not touch the finished run"


def test_catalogue_is_large_and_documented():
    assert len(CATALOGUE) >= 30
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)
    text = DOC.read_text()
    for case in CATALOGUE:
        assert f"`{case.id}`" in text, f"{case.id} missing from {DOC}; regenerate it (see this file's docstring)"


@pytest.mark.skipif(not os.environ.get("MHA_FT_WRITE_DOCS"), reason="regenerates docs/bad-inputs.md on request")
def test_write_doc(env: Env):
    lines = [
        "# Bad inputs and what mha-ft says",
        "",
        "Each entry ends with exactly this one line on stderr and exit code 2; nothing is written or overwritten.",
        "The list is the test catalogue in `tests/test_bad_inputs.py`; regenerate this page with",
        "`MHA_FT_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k write_doc`.",
        "Paths shown as … are the test's temporary folders.",
        "",
        "| id | bad input | message |",
        "|---|---|---|",
    ]
    for case in CATALOGUE:
        _, stderr = run_case(case, env)
        message = stderr.strip().replace("|", "\\|").replace(str(env.tmp), "…").replace(str(env.model), "…/tiny-bert")
        lines.append(f"| `{case.id}` | {case.what} | {message} |")
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
