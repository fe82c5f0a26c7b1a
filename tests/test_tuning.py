"""Tuning methods on tiny random encoders: each trains, saves only what trained, and reloads to the same logits.

Covers PEFT methods, our bottleneck adapter and full fine-tuning options, with stock attention and ours, on
BERT, RoBERTa, DistilBERT and ALBERT; the Trainer hooks (AdaLoRA's schedule, layer-wise learning rates); and
the one-line errors for bad methods and options.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from peft.utils import ModulesToSaveWrapper
from safetensors.torch import load_file
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    Trainer,
    TrainingArguments,
)

from hf_mha.attention import swap_attention
from hf_mha.errors import UserError
from hf_mha.recipe import recipe_from_dict
from hf_mha.tuning import count_trainable, load_tuned_model, resolve, task_head_modules
from hf_mha.tuning.bottleneck import BottleneckLayer

def apply_tuning(model, recipe):
    """What `mha-ft train` does to the loaded model: the recipe's tuning applied, and the trainable counts."""
    model = resolve(recipe).apply(model)
    return model, count_trainable(model)


VOCAB = 64  # token ids of the random batches; every tiny encoder's vocabulary is larger
LABELS = {"id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (8, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 7:] = 0
    attention_mask[3, 9:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.arange(8) % 3}


def make_recipe(base_dir, tuning: dict, attention: str = "stock", task: str = "text-classification"):
    return recipe_from_dict({"task": task, "model": {"name": str(base_dir), "attention": attention}, "tuning": tuning})


def make_model(base_dir, attention: str = "stock"):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=3, **LABELS)
    if attention == "mha":
        swap_attention(model)
    return model


def train_steps(model, batch, steps: int = 8, lr: float = 1e-2) -> list[float]:
    # No weight decay: a parameter that changes did so because it got gradients.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def head_state(model, name: str) -> dict[str, torch.Tensor]:
    """The weights the head computes with: PEFT's trained copy when it wraps the head."""
    root = model.get_base_model() if isinstance(model, PeftModel) else model
    module = root.get_submodule(name)
    if isinstance(module, ModulesToSaveWrapper):
        module = module.modules_to_save[module.active_adapter]
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


HEADS = {"bert": ["classifier", "bert.pooler"], "roberta": ["classifier"],
         "distilbert": ["pre_classifier", "classifier"], "albert": ["classifier", "albert.pooler"]}
METHODS = {
    "full": {"method": "full"},
    "lora": {"method": "lora", "r": 4},
    "dora": {"method": "dora", "r": 4},
    "rslora": {"method": "lora", "r": 4, "use_rslora": True, "target_modules": "attention"},
    "adalora": {"method": "adalora", "init_r": 4, "target_r": 2, "total_step": 8},
    "ia3": {"method": "ia3"},
    "prefix": {"method": "prefix", "num_virtual_tokens": 4},
    "prompt": {"method": "prompt", "num_virtual_tokens": 4},
    "loha": {"method": "loha", "r": 4},
    "lokr": {"method": "lokr", "r": 4},
    "houlsby": {"method": "adapter", "placement": "houlsby", "reduction_factor": 4},
    "pfeiffer": {"method": "adapter", "placement": "pfeiffer", "reduction_factor": 4, "non_linearity": "gelu"},
}
CASES = (
    [("bert", method, "stock") for method in METHODS]
    + [(arch, method, "stock") for arch in ("roberta", "distilbert", "albert")
       for method in ("lora", "ia3", "prompt", "houlsby")]
    + [("bert", method, "mha") for method in METHODS if method != "prefix"]
    + [(arch, method, "mha") for arch in ("distilbert", "albert") for method in ("lora", "houlsby")]
)


@pytest.mark.parametrize("arch, method, attention", CASES, ids=["-".join(case) for case in CASES])
def test_method_trains_saves_and_reloads(arch, method, attention, encoder_dirs, batch, tmp_path):
    recipe = make_recipe(encoder_dirs[arch], METHODS[method], attention)
    model = make_model(encoder_dirs[arch], attention)
    heads = HEADS[arch]
    head_before = {name: head_state(model, name) for name in heads}

    model, counts = apply_tuning(model, recipe)
    assert counts["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (counts["trainable_percent"] == 100) == (method == "full")
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    losses = train_steps(model, batch)
    assert losses[-1] < losses[0], losses
    if method != "full":  # every adapter weight and the head got gradients
        unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, trainable_before[n])]
        assert not unchanged, unchanged
    for name in heads:
        trained = head_state(model, name)
        assert any(not torch.equal(trained[k], head_before[name][k]) for k in trained), f"head {name} did not train"

    expected = logits(model, batch)
    resolve(recipe).save(model, tmp_path)
    torch.testing.assert_close(logits(model, batch), expected, rtol=0, atol=0)  # saving left our attention in place
    files = {p.name for p in tmp_path.iterdir()}
    if method == "full":
        assert "model.safetensors" in files
    else:
        assert "model.safetensors" not in files and "config.json" in files
        adapter = METHODS[method]["method"] == "adapter"
        saved = load_file(tmp_path / ("bottleneck_model.safetensors" if adapter else "adapter_model.safetensors"))
        assert all(any(f"{head}." in key for key in saved) for head in heads), sorted(saved)
        assert sum(t.numel() for t in saved.values()) < counts["total_params"] / 2

    loaded = load_tuned_model(recipe, tmp_path)
    if attention == "mha":
        swap_attention(loaded)
    torch.testing.assert_close(logits(loaded, batch), expected, rtol=0, atol=1e-6)
    for name in heads:
        reloaded = head_state(loaded, name)
        assert all(torch.equal(reloaded[k], v) for k, v in head_state(model, name).items())


@pytest.mark.parametrize("arch", HEADS)
def test_the_head_is_what_sits_beside_the_encoder_and_the_pooler(arch, encoder_dirs):
    assert task_head_modules(make_model(encoder_dirs[arch])) == HEADS[arch]


@pytest.mark.parametrize("task, method", [(task, method) for task in ("token-classification", "question-answering")
                                          for method in ("lora", "houlsby")])
def test_token_and_span_heads_train_and_reload(task, method, encoder_dirs, batch, tmp_path):
    model_class, head, targets = {
        "token-classification": (AutoModelForTokenClassification, "classifier",
                                 {"labels": batch["labels"][:, None].repeat(1, 12)}),
        "question-answering": (AutoModelForQuestionAnswering, "qa_outputs",
                               {"start_positions": torch.arange(8), "end_positions": torch.arange(8) + 2}),
    }[task]
    torch.manual_seed(0)
    model = model_class.from_pretrained(encoder_dirs["bert"], num_labels=3 if task == "token-classification" else 2)
    assert task_head_modules(model) == [head]
    recipe = make_recipe(encoder_dirs["bert"], METHODS[method], task=task)
    model, _ = apply_tuning(model, recipe)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    losses = train_steps(model, inputs | targets)
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        expected = model(**inputs)
    resolve(recipe).save(model, tmp_path)
    with torch.no_grad():
        reloaded = load_tuned_model(recipe, tmp_path).eval()(**inputs)
    for key in ("logits",) if task == "token-classification" else ("start_logits", "end_logits"):
        torch.testing.assert_close(reloaded[key], expected[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "question-answering"])
def test_peft_models_see_the_segment_ids(task, encoder_dirs, batch, tmp_path):
    """Sentence pairs come with token_type_ids; a fresh LoRA (its B matrices are zero) must compute what the
    model without it computes from them, for every task head (PEFT's own QA wrapper drops them), and so must
    the adapter once saved and reloaded."""
    model_class = {"text-classification": AutoModelForSequenceClassification,
                   "token-classification": AutoModelForTokenClassification,
                   "question-answering": AutoModelForQuestionAnswering}[task]
    torch.manual_seed(0)
    model = model_class.from_pretrained(encoder_dirs["bert"], num_labels=2).eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "token_type_ids": (torch.arange(12) >= 5).long().expand(8, 12)}
    with torch.no_grad():
        expected = model(**inputs)
        assert (expected[0] - model(**{**inputs, "token_type_ids": None})[0]).abs().max() > 1e-5
    recipe = make_recipe(encoder_dirs["bert"], {"method": "lora", "r": 4}, task=task)
    tuned, _ = apply_tuning(model, recipe)
    resolve(recipe).save(tuned, tmp_path)
    for peft_model in (tuned.eval(), load_tuned_model(recipe, tmp_path).eval()):
        with torch.no_grad():
            got = peft_model(**inputs)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


def test_adapters_start_as_the_base_model_and_sit_where_the_placement_says(encoder_dirs, batch):
    # two layers x (attention, feed-forward); ALBERT shares one layer across depth, and so its adapters
    for arch, count in (("bert", 4), ("distilbert", 4), ("albert", 2)):
        model = make_model(encoder_dirs[arch])
        before = logits(model, batch)
        model, _ = apply_tuning(model, make_recipe(encoder_dirs[arch], METHODS["houlsby"]))
        torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=0)
        wrapped = [n for n, m in model.named_modules() if isinstance(m, BottleneckLayer)]
        assert len(wrapped) == count, wrapped
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), make_recipe(encoder_dirs["bert"], METHODS["pfeiffer"]))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, BottleneckLayer)]
    assert wrapped == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]


@pytest.mark.parametrize("arch, targets, expected", [
    ("bert", "auto", {"query", "value"}),
    ("bert", "attention", {"query", "key", "value", "dense"}),
    ("distilbert", "auto", {"q_lin", "v_lin"}),
    ("distilbert", "qkv", {"q_lin", "k_lin", "v_lin"}),
    ("albert", "attention", {"query", "key", "value", "dense"}),
])
def test_target_module_presets_per_architecture(arch, targets, expected, encoder_dirs):
    for attention in ("stock", "mha"):
        model, _ = apply_tuning(make_model(encoder_dirs[arch], attention),
                                make_recipe(encoder_dirs[arch], {"method": "lora", "target_modules": targets}))
        adapted = {n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
        assert adapted == expected, (attention, adapted)


def adalora_trainer(model, recipe, batch, folder, compute_metrics=None, **arguments):
    rows = [{"input_ids": batch["input_ids"][i], "attention_mask": batch["attention_mask"][i],
             "labels": batch["labels"][i]} for i in range(8)]
    args = TrainingArguments(output_dir=str(folder), per_device_train_batch_size=2, learning_rate=1e-2,
                             report_to="none", use_cpu=True, **arguments)
    return Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows[:2],
                   compute_metrics=compute_metrics, callbacks=resolve(recipe).callbacks())


def test_adalora_schedule_runs_in_the_trainer_and_fills_total_step(encoder_dirs, batch, tmp_path):
    recipe = make_recipe(encoder_dirs["bert"], {"method": "adalora", "init_r": 4, "target_r": 2})
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    trainer = adalora_trainer(model, recipe, batch, tmp_path, num_train_epochs=2, save_strategy="no")
    trainer.train()
    config = model.peft_config["default"]
    assert config.total_step == trainer.state.max_steps == 8
    assert config.rank_pattern, "update_and_allocate never ran"
    resolve(recipe).save(model, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["total_step"] == 8
    torch.testing.assert_close(logits(load_tuned_model(recipe, tmp_path / "run"), batch), logits(model, batch),
                               rtol=0, atol=1e-6)


def test_adalora_checkpoints_reload_for_best_model_and_resume(encoder_dirs, batch, tmp_path):
    recipe = make_recipe(encoder_dirs["bert"], {"method": "adalora", "init_r": 6, "target_r": 2, "tfinal": 6})
    scores = iter([1.0, 0.0, 0.0])  # the first epoch is the best: its ranks differ from the last epoch's
    arguments = dict(num_train_epochs=3, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                     metric_for_best_model="score")
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    trainer = adalora_trainer(model, recipe, batch, tmp_path, compute_metrics=lambda _: {"score": next(scores)},
                              **arguments)
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4")
    from_best = PeftModel.from_pretrained(make_model(encoder_dirs["bert"]), tmp_path / "checkpoint-4")
    torch.testing.assert_close(logits(model, batch), logits(from_best, batch), rtol=0, atol=1e-6)

    # Resume from the second epoch's checkpoint, in the final phase (steps 6-12: the budget is fixed).
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    resumed = adalora_trainer(model, recipe, batch, tmp_path, num_train_epochs=3, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))
    assert resumed.state.global_step == 12 and model.peft_config["default"].rank_pattern


def test_adalora_without_room_for_a_budget_phase_is_a_user_error(encoder_dirs, tmp_path):
    recipe = make_recipe(encoder_dirs["bert"], {"method": "adalora", "tinit": 50})
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": torch.tensor([5, 6]), "labels": 0}],
                      callbacks=resolve(recipe).callbacks())
    with pytest.raises(UserError, match="leave no AdaLoRA budgeting phase in 10 training steps"):
        trainer.train()


def test_full_fine_tuning_freezes_and_decays_learning_rate_per_layer(encoder_dirs, tmp_path):
    recipe = make_recipe(encoder_dirs["bert"], {"method": "full", "freeze_embeddings": True, "freeze_layers": 1,
                                             "layerwise_lr_decay": 0.5})
    model, counts = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("bert.embeddings.") for n in frozen)
    assert any(n.startswith("bert.encoder.layer.0.") for n in frozen)
    assert not any(n.startswith(("bert.encoder.layer.1.", "classifier.")) for n in frozen)
    assert counts["trainable_params"] < counts["total_params"]

    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, report_to="none",
                             use_cpu=True)
    trainer = Trainer(model=model, args=args, optimizer_cls_and_kwargs=resolve(recipe).optimizer(model, args))
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == (1e-3, 0.1)
    assert lr_of[id(params["bert.pooler.dense.bias"])] == (1e-3, 0.0)
    assert lr_of[id(params["bert.encoder.layer.1.attention.self.query.weight"])] == pytest.approx((1e-3 * 0.5, 0.1))
    assert id(params["bert.encoder.layer.0.attention.self.query.weight"]) not in lr_of  # frozen
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())

    recipe = make_recipe(encoder_dirs["bert"], {"method": "full", "layerwise_lr_decay": 0.5})
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]), recipe)
    groups = resolve(recipe).optimizer(model, args)[1]["params"]
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** 3)
    assert lr_of[id(params["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(1e-3 * 0.5 ** 2)


@pytest.mark.parametrize("tuning, task, attention, message", [
    ({"method": "lroa"}, None, "stock",
     "tuning.method: 'lroa' is not a method (did you mean 'lora'?); choose full, lora, dora"),
    ({"method": "lora", "rr": 8}, None, "stock",
     "tuning.rr: not an option of method lora (did you mean 'r'?); options: r, target_modules"),
    ({"method": "lora", "r": "eight"}, None, "stock", "tuning.r must be int, got 'eight'"),
    ({"method": "lora", "use_dora": "yes"}, None, "stock", "tuning.use_dora must be bool, got 'yes'"),
    ({"method": "lora", "bias": "some"}, None, "stock", "tuning.bias must be 'none' | 'all' | 'lora_only', got 'some'"),
    ({"method": "lora", "task_type": "SEQ_CLS"}, None, "stock", "tuning.task_type: set by mha-ft"),
    ({"method": "lora", "freeze_layers": 2}, None, "stock",
     "tuning.freeze_layers: an option of method full, not of lora"),
    ({"method": "full", "freeze_layer": 2}, None, "stock", "(did you mean 'freeze_layers'?)"),
    ({"method": "full", "layerwise_lr_decay": 1.5}, None, "stock", "layerwise_lr_decay must be in (0, 1]"),
    ({"method": "adapter", "placement": "middle"}, None, "stock", "tuning.placement must be 'houlsby' | 'pfeiffer'"),
    ({"method": "adapter", "reduction_factor": 0}, None, "stock", "reduction_factor must be 1 or more"),
    ({"method": "prompt"}, "token-classification", "stock", "does not support token-classification"),
    ({"method": "prefix"}, "question-answering", "stock", "does not support question-answering"),
    ({"method": "prefix"}, None, "mha", "set model.attention=stock"),
])
def test_bad_method_or_option_is_one_line(tuning, task, attention, message, encoder_dirs):
    with pytest.raises(UserError) as error:
        resolve(make_recipe(encoder_dirs["bert"], tuning, attention, task or "text-classification"))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_option_strings_from_yaml_become_numbers(encoder_dirs):
    model, _ = apply_tuning(make_model(encoder_dirs["bert"]),
                            make_recipe(encoder_dirs["bert"], {"method": "lora", "r": "4", "lora_dropout": "1e-1"}))
    assert model.peft_config["default"].r == 4 and model.peft_config["default"].lora_dropout == 0.1


@pytest.mark.parametrize("arch, tuning, message", [
    ("bert", {"method": "lora", "target_modules": ["query", "qury"]},
     "'qury' is not a module of this bert model (did you mean 'query'?); its linear modules: query, key, value, dense"),
    ("distilbert", {"method": "prefix"},
     "prefix tuning feeds past key/values, which DistilBertForSequenceClassification"),
    ("albert", {"method": "full", "freeze_layers": 1}, "ALBERT shares one set of layer weights"),
    ("bert", {"method": "full", "freeze_layers": 3}, "3 is more than the model's 2 layers"),
])
def test_errors_that_need_the_model(arch, tuning, message, encoder_dirs):
    with pytest.raises(UserError) as error:
        apply_tuning(make_model(encoder_dirs[arch]), make_recipe(encoder_dirs[arch], tuning))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_any_peft_method_by_its_peft_name(encoder_dirs, batch):
    model, counts = apply_tuning(make_model(encoder_dirs["bert"]),
                                 make_recipe(encoder_dirs["bert"], {"method": "vera", "r": 8, "target_modules": "auto"}))
    assert type(model.peft_config["default"]).__name__ == "VeraConfig"
    assert 0 < counts["trainable_percent"] < 100
    losses = train_steps(model, batch)
    assert losses[-1] < losses[0]
