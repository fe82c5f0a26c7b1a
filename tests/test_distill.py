"""Distillation (`mha-ft distill`, `distill:`) for each task, and shallower students (`model.keep_layers`,
`model.num_layers`) whose saved folders load in plain transformers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from conftest import INTENT_EXAMPLES, intent_overrides, write_jsonl
from hf_mha.distill import Distiller, _kl
from hf_mha.errors import UserError
from hf_mha.models import load_model
from hf_mha.recipe import load_recipe
from hf_mha_cli.main import app
from test_ner import CONLL_IOB1, conll_file, ner_model_dir  # noqa: F401 (a fixture)
from test_qa import qa_model_dir, write_squad  # noqa: F401 (a fixture)

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def intent(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("distill")
    data = [*intent_overrides(root), "train.use_cpu=true", "data.max_length=32"]
    invoke("train", "--recipe", "quickstart", f"model.name={tiny_model_dir}", *data, "train.max_steps=8",
           f"output_dir={root / 'teacher'}")
    return root, data


def test_a_student_keeps_the_chosen_layers_and_loads_in_plain_transformers(tiny_model_dir, tmp_path):
    recipe = load_recipe("quickstart", [f"model.name={tiny_model_dir}", "model.keep_layers=[1]"])
    torch.manual_seed(0)
    student = load_model(recipe, AutoModelForSequenceClassification, num_labels=3).eval()
    whole = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, whole.bert.encoder.layer[1].output.dense.weight)
    student.save_pretrained(tmp_path / "student")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(again(**inputs).logits, student(**inputs).logits)


def test_distilled_student_of_a_text_classification_run(intent):
    root, data = intent
    teacher = root / "teacher"
    invoke("distill", "--teacher", str(teacher), "--recipe", "quickstart", "--layers", "1", *data, "train.max_steps=8",
           f"output_dir={root / 'distilled'}")
    invoke("train", "--recipe", "quickstart", f"model.name={teacher}", "model.num_layers=1", *data, "train.max_steps=8",
           f"output_dir={root / 'plain'}")
    distilled = json.loads((root / "distilled" / "metrics.json").read_text())
    plain = json.loads((root / "plain" / "metrics.json").read_text())
    assert json.loads((root / "distilled" / "config.json").read_text())["num_hidden_layers"] == 1
    # Same start, same batches: only the teacher's soft targets make the losses differ.
    assert distilled["train_loss"] != pytest.approx(plain["train_loss"], rel=1e-6)
    invoke("eval", "--run", str(root / "distilled"), "--split", "test")  # a student run is a run like any other


def test_a_lora_student_distils_too(intent, tiny_model_dir):
    root, data = intent
    invoke("distill", "--teacher", str(root / "teacher"), "--recipe", "quickstart", f"model.name={tiny_model_dir}",
           "tuning.method=lora", "tuning.r=4", *data, "train.max_steps=4", f"output_dir={root / 'lora'}")
    assert (root / "lora" / "adapter_model.safetensors").is_file()
    invoke("eval", "--run", str(root / "lora"))


def test_ner_and_qa_students(tmp_path, ner_model_dir, qa_model_dir):  # noqa: F811 (fixtures)
    train, validation = conll_file(tmp_path, CONLL_IOB1 * 6, "eng.train"), conll_file(tmp_path, CONLL_IOB1, "eng.testa")
    ner = [f"data.files.train={train}", f"data.files.validation={validation}", "data.files.test=null",
           "data.max_length=32", "train.max_steps=4", "train.use_cpu=true"]
    invoke("train", "--recipe", "conll2003-full", f"model.name={ner_model_dir}", *ner, f"output_dir={tmp_path / 'ner'}")
    invoke("distill", "--teacher", str(tmp_path / "ner"), "--recipe", "conll2003-full", "--layers", "1", *ner,
           f"output_dir={tmp_path / 'ner-student'}")
    assert "eval_f1" in json.loads((tmp_path / "ner-student" / "metrics.json").read_text())
    squad = write_squad(tmp_path / "squad.json", articles=4)
    qa = [f"data.files.train={squad}", "data.validation_group=title", "data.validation_fraction=0.3",
          "data.max_length=32", "data.doc_stride=8", "train.max_steps=4", "train.use_cpu=true"]
    invoke("train", "--recipe", "squad-full", f"model.name={qa_model_dir}", *qa, f"output_dir={tmp_path / 'qa'}")
    invoke("distill", "--teacher", str(tmp_path / "qa"), "--recipe", "squad-full", "--layers", "1", *qa,
           f"output_dir={tmp_path / 'qa-student'}")
    assert "eval_exact_match" in json.loads((tmp_path / "qa-student" / "metrics.json").read_text())


def test_the_soft_loss_of_each_task():
    torch.manual_seed(0)
    T = 2.0
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    expected = F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="sum") * T * T
    assert _kl(student, teacher, T).sum() == pytest.approx(expected.item(), rel=1e-5)
    assert _kl(teacher, teacher, T).abs().max() < 1e-6

    def distiller(task, problem_type=None):
        made = Distiller.__new__(Distiller)
        made.task, made.temperature, made.alpha, made.problem_type = task, T, 0.5, problem_type
        return made

    tokens, taught = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    labels = torch.tensor([[-100, 0, 1, -100, -100], [-100, 2, -100, -100, -100]])
    total, count = distiller("token-classification").soft({"logits": tokens}, {"logits": taught}, {"labels": labels})
    assert count == 3 and total == pytest.approx(_kl(tokens, taught, T)[labels != -100].sum().item(), rel=1e-5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    start, end = torch.randn(2, 4), torch.randn(2, 4)
    changed_pad = start.clone()
    changed_pad[0, 3] = 50.0  # a padded position must not count
    qa = distiller("question-answering")
    a, _ = qa.soft({"start_logits": start, "end_logits": end}, {"start_logits": end, "end_logits": start}, {"attention_mask": mask})
    b, _ = qa.soft({"start_logits": changed_pad, "end_logits": end}, {"start_logits": end, "end_logits": start}, {"attention_mask": mask})
    assert a == pytest.approx(b.item(), rel=1e-4)
    mse, _ = distiller("text-classification", "regression").soft({"logits": torch.ones(2, 1)}, {"logits": torch.zeros(2, 1)}, {})
    assert mse == pytest.approx(2.0)


@pytest.mark.parametrize("extra, message", [
    (["model.num_layers=3"], "model.num_layers: 3 is more than the 2 layers"),
    (["model.keep_layers=[0, 5]"], "model.keep_layers: layer 5 is out of range"),
    (["model.keep_layers=[1, 0]"], "give layer numbers from 0, each once, in increasing order"),
    (["model.keep_layers=[0]", "model.num_layers=1"], "give one"),
])
def test_students_that_cannot_be_built(intent, tiny_model_dir, extra, message, tmp_path):
    root, data = intent
    result = runner.invoke(app, ["validate", "--recipe", "quickstart", f"model.name={tiny_model_dir}", *data, *extra,
                                 f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code != 0 and message in str(result.exception)


def test_teachers_that_cannot_teach(intent, tmp_path, tiny_model_dir, ner_model_dir):  # noqa: F811
    root, data = intent
    ner = root / "ner-teacher"
    if not ner.exists():
        train = conll_file(tmp_path, CONLL_IOB1 * 2, "eng.train")
        invoke("train", "--recipe", "conll2003-full", f"model.name={ner_model_dir}", f"data.files.train={train}",
               f"data.files.validation={train}", "data.files.test=null", "train.max_steps=1", "train.use_cpu=true",
               f"output_dir={ner}")
    fewer = write_jsonl(tmp_path / "two.jsonl", [{"text": t, "label": label} for t, label in INTENT_EXAMPLES
                                                 if label != INTENT_EXAMPLES[0][1]])
    cases = [
        ([f"distill.teacher={ner}"], "is a token-classification run; this recipe trains text-classification"),
        ([f"distill.teacher={root / 'teacher'}", f"data.files.train={fewer}", f"data.files.validation={fewer}",
          "data.files.test=null"],
         "the teacher was trained on the labels"),
        ([f"distill.teacher={tmp_path}"], "distill.teacher:"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message):
            from hf_mha.training import validate

            validate(load_recipe("quickstart", [f"model.name={tiny_model_dir}", *data, *extra,
                                                f"output_dir={tmp_path / 'x'}"]))


def test_the_combined_loss_weighs_hard_and_soft():
    made = Distiller.__new__(Distiller)
    made.task, made.temperature, made.problem_type, made.inputs = "text-classification", 1.0, "single_label_classification", ["input_ids"]
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    made.teacher = torch.nn.Module()
    made.teacher.forward = lambda input_ids: {"logits": logits}
    made.teacher.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    inputs = {"input_ids": torch.zeros(1, 2, dtype=torch.long)}
    for alpha, expected in ((0.0, 1.0), (1.0, 0.0), (0.5, 0.5)):
        made.alpha = alpha
        assert made.combine(torch.tensor(1.0), {"logits": logits}, inputs).item() == pytest.approx(expected, abs=1e-6)
