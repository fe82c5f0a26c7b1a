"""`mha-ft export --format onnx [--quantize int8]`: the graph computes what the torch model computes (classification,
NER, QA, a merged LoRA run), int8 reports its metric and speed, `predict --model` and `eval --model` run the folder
through onnxruntime, and methods with no single graph are refused before any work."""

from __future__ import annotations

import contextlib
import io
import json

import onnx
import pytest
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, build_tiny_bert, write_jsonl
from test_export import UNMERGEABLE, make_run
from test_ner import CONLL_IOB1
from test_qa import CONTEXTS, QUESTIONS, write_squad
from hf_mha.errors import UserError
from hf_mha.export import export_run
from hf_mha.onnx_export import INT8_FILE, ONNX_FILE, TOLERANCE
from hf_mha_cli.main import app, main


def cli(*args: str) -> tuple[int, str]:
    """The real entry point in this process (tiny runs train in seconds without a fresh interpreter): exit code and
    stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code or 0, stderr.getvalue()


def train(folder, recipe: str, model_dir, *overrides: str):
    out = folder / "run"
    code, stderr = cli("train", "--recipe", recipe, f"model.name={model_dir}", "train.use_cpu=true",
                       "train.per_device_train_batch_size=8", "train.learning_rate=5e-3", f"output_dir={out}",
                       *overrides)
    assert code == 0, stderr[-3000:]
    return out


def intent_files(folder):
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    return [f"data.files.{split}={write_jsonl(folder / f'{split}.jsonl', rows * (2 if split == 'train' else 1))}"
            for split in ("train", "validation", "test")]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("onnx-text")
    return train(folder, "quickstart", tiny_model_dir, *intent_files(folder), "train.num_train_epochs=2")


@pytest.fixture(scope="module")
def text_onnx(text_run, tmp_path_factory):
    """The text run exported once with int8, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("onnx-text-export") / "onnx"
    return export_run(text_run, out, "onnx", "int8")


def check_graph(exported, examples: int):
    assert exported.onnx.max_abs_diff <= TOLERANCE and exported.onnx.within_tolerance
    assert exported.onnx.source == f"{examples} validation examples"
    files = {p.name for p in exported.out.iterdir()}
    assert {ONNX_FILE, "config.json", "tokenizer.json", "recipe.yaml"} <= files
    assert not [name for name in files if name.endswith(".safetensors")], "the graph replaces the weights"
    assert not list(exported.out.parent.glob(f".{exported.out.name}.*")), "staging folder left behind"
    graph = onnx.load(exported.out / ONNX_FILE)
    for node in graph.graph.input:  # dynamic axes
        assert [dim.dim_param for dim in node.type.tensor_type.shape.dim] == ["batch", "sequence"]
    return graph


def test_text_classification_graph_matches_torch_and_int8_reports(text_onnx):
    graph = check_graph(text_onnx, len(INTENT_EXAMPLES))
    assert [o.name for o in graph.graph.output] == ["logits"]
    assert {i.name for i in graph.graph.input} == {"input_ids", "attention_mask", "token_type_ids"}
    check = text_onnx.onnx
    assert (text_onnx.out / INT8_FILE).is_file()
    assert check.metric == "accuracy" and set(check.metrics) == {"torch", "int8"}
    assert all(0 <= value <= 1 for value in check.metrics.values())
    assert 0 <= check.int8_agreement <= 1 and check.int8_max_abs_diff >= 0
    assert set(check.examples_per_second) == {"torch", "onnx", "int8"}
    assert all(speed > 0 for speed in check.examples_per_second.values())
    lines = check.lines()
    assert "within the 1e-04 tolerance" in lines[0]
    assert lines[1].startswith("ONNX int8 vs torch: accuracy ") and "same argmax as torch on" in lines[1]
    assert "x ONNX fp32" in lines[2] and "x torch" in lines[2]


def test_predict_and_eval_with_the_onnx_folder(text_run, text_onnx, tmp_path):
    inputs = tmp_path / "new.csv"
    inputs.write_text("text\n" + "\n".join(text for text, _ in INTENT_EXAMPLES) + "\nwhere is my parcel\n")
    rows = {}
    for name, source in {"run": ["--run", str(text_run)], "onnx": ["--model", str(text_onnx.out)],
                         "int8": ["--model", str(text_onnx.out), "--int8"]}.items():
        code, stderr = cli("predict", *source, "--input", str(inputs), "--output", str(tmp_path / f"{name}.jsonl"))
        assert code == 0, stderr
        rows[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["predicted"] for r in rows["onnx"]] == [r["predicted"] for r in rows["run"]]
    for ours, theirs in zip(rows["onnx"], rows["run"]):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    assert len(rows["int8"]) == len(rows["run"])

    # eval --model takes the folder's recipe and writes into the folder, scoring as eval --run does
    code, stderr = cli("eval", "--model", str(text_onnx.out))
    assert code == 0, stderr
    scored = json.loads((text_onnx.out / "eval_metrics.json").read_text())
    code, stderr = cli("eval", "--run", str(text_run))
    assert code == 0, stderr
    rescored = json.loads((text_run / "eval_metrics.json").read_text())
    assert scored["eval_accuracy"] == pytest.approx(rescored["eval_accuracy"])
    assert scored["eval_loss"] == pytest.approx(rescored["eval_loss"], abs=1e-5)
    assert scored["eval_accuracy"] == pytest.approx(text_onnx.onnx.metrics["torch"])


def test_predict_with_a_plain_transformers_export(text_run, tmp_path):
    plain = export_run(text_run, tmp_path / "plain")
    assert plain.onnx is None and (plain.out / "recipe.yaml").is_file() and (plain.out / "model.safetensors").is_file()
    inputs = tmp_path / "new.csv"
    inputs.write_text("text\nwhere is my parcel\nreset my password\n")
    for name, source in {"run": ["--run", str(text_run)], "plain": ["--model", str(plain.out)]}.items():
        code, stderr = cli("predict", *source, "--input", str(inputs), "--output", str(tmp_path / f"{name}.jsonl"))
        assert code == 0, stderr
    assert (tmp_path / "plain.jsonl").read_text() == (tmp_path / "run.jsonl").read_text()


def test_lora_run_merges_into_one_graph(tmp_path, tiny_model_dir):
    run = train(tmp_path, "quickstart", tiny_model_dir, *intent_files(tmp_path), "train.num_train_epochs=2",
                "tuning.method=lora", "tuning.r=4", "tuning.target_modules=attention")
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "onnx"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "merged the lora adapter" in printed
    assert "ONNX fp32 vs torch on 12 validation examples: max |logit diff|" in printed
    assert "within the 1e-04 tolerance" in printed and "int8" not in printed
    assert not (tmp_path / "onnx" / INT8_FILE).exists() and (tmp_path / "onnx" / ONNX_FILE).is_file()


@pytest.mark.parametrize("arch, inputs", [
    ("distilbert", ["input_ids", "attention_mask"]),  # DistilBERT has no segment embeddings
    ("roberta", ["input_ids", "token_type_ids", "attention_mask"]),  # the fixture's BERT tokenizer gives segments
])
def test_other_architectures_and_a_run_without_validation_data(arch, inputs, tmp_path, encoder_dirs):
    """The graph takes what both the tokenizer gives and the model accepts; a run whose recipe names no data is
    checked on the probe batch, and says so."""
    make_run(tmp_path / "run", encoder_dirs[arch], {"method": "lora", "r": 4, "lora_alpha": 8})
    exported = export_run(tmp_path / "run", tmp_path / "onnx", "onnx")
    assert exported.merged and exported.onnx.within_tolerance
    assert exported.onnx.source.startswith("the probe batch of 2 (no validation data: ")
    graph = onnx.load(exported.out / ONNX_FILE)
    assert [i.name for i in graph.graph.input] == inputs


def test_ner_graph_matches_torch_and_predicts_the_same_tags(tmp_path, tiny_model_dir):
    train_file = tmp_path / "eng.train"
    train_file.write_text(CONLL_IOB1 * 4)
    validation = tmp_path / "eng.testa"
    validation.write_text(CONLL_IOB1)
    run = train(tmp_path, "conll2003-full", tiny_model_dir, f"data.files.train={train_file}",
                f"data.files.validation={validation}", f"data.files.test={validation}", "data.max_length=32",
                "train.num_train_epochs=1")
    exported = export_run(run, tmp_path / "onnx", "onnx")
    graph = check_graph(exported, 3)
    assert [o.name for o in graph.graph.output] == ["logits"]
    inputs = tmp_path / "new.jsonl"
    write_jsonl(inputs, [{"text": "John Smith visited London"}, {"text": "EU rejects Acme Corp"}])
    for name, source in {"run": ["--run", str(run)], "onnx": ["--model", str(exported.out)]}.items():
        code, stderr = cli("predict", *source, "--input", str(inputs), "--output", str(tmp_path / f"{name}.jsonl"))
        assert code == 0, stderr
    assert (tmp_path / "onnx.jsonl").read_text() == (tmp_path / "run.jsonl").read_text()


def test_qa_graph_matches_torch(tmp_path):
    model_dir = build_tiny_bert(tmp_path / "qa-bert", " ".join(CONTEXTS) + " " + " ".join(q for _, q, _ in QUESTIONS))
    squad = write_squad(tmp_path / "squad.json", articles=4)
    run = train(tmp_path, "squad-full", model_dir, f"data.files.train={squad}", "data.validation_group=title",
                "data.validation_fraction=0.3", "data.max_length=32", "data.doc_stride=8", "train.num_train_epochs=1")
    exported = export_run(run, tmp_path / "onnx", "onnx", "int8")
    examples = int(exported.onnx.source.split()[0])
    graph = check_graph(exported, examples)
    assert [o.name for o in graph.graph.output] == ["start_logits", "end_logits"]
    assert exported.onnx.metric == "f1" and set(exported.onnx.metrics) == {"torch", "int8"}
    # scored through the wrapper's QA forward: eval --model on the graph reports eval_f1 as eval --run does
    code, stderr = cli("eval", "--model", str(exported.out))
    assert code == 0, stderr
    scored = json.loads((exported.out / "eval_metrics.json").read_text())
    assert scored["eval_f1"] == pytest.approx(exported.onnx.metrics["torch"], abs=1e-6)


@pytest.mark.parametrize("method", ["prefix", "adapter"])
def test_methods_without_one_graph_are_refused_before_any_work(method, tmp_path, tiny_model_dir):
    make_run(tmp_path / "run", tiny_model_dir, UNMERGEABLE[method])
    code, stderr = cli("export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--format", "onnx")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --format onnx: the ")
    assert "cannot be one ONNX graph" in lines[0] and "--format transformers" in lines[0]
    assert ("virtual tokens" if method == "prefix" else "non-linearity") in lines[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_bad_export_and_predict_options(text_run, tmp_path):
    with pytest.raises(UserError, match="--quantize int8 needs --format onnx"):
        export_run(text_run, tmp_path / "out", quantize="int8")
    with pytest.raises(UserError, match="--format: unknown format 'tflite'; choose transformers or onnx"):
        export_run(text_run, tmp_path / "out", "tflite")
    with pytest.raises(UserError, match="--quantize: unknown 'int4'"):
        export_run(text_run, tmp_path / "out", "onnx", "int4")
    assert not (tmp_path / "out").exists()
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match="give --run DIR or --model DIR, not both"):
        CliRunner().invoke(app, ["predict", "--run", str(text_run), "--model", str(text_run), "--input", str(inputs),
                                 "--output", str(tmp_path / "p.jsonl")], catch_exceptions=False)
    with pytest.raises(UserError, match="holds no model.int8.onnx; export the run with mha-ft export --format onnx"):
        CliRunner().invoke(app, ["predict", "--run", str(text_run), "--int8", "--input", str(inputs),
                                 "--output", str(tmp_path / "p.jsonl")], catch_exceptions=False)
    assert not (tmp_path / "p.jsonl").exists()
