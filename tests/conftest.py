"""Shared fixtures: a tiny random BERT with a real WordPiece tokenizer, saved to disk, and small data files.

Nothing here downloads: the vocabulary is built from the words of the test data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

INTENT_EXAMPLES = [
    ("where is my order", "status"), ("has my parcel shipped yet", "status"),
    ("tracking number shows nothing", "status"), ("when will my package arrive", "status"),
    ("i want my money back", "refund"), ("please refund the broken lamp", "refund"),
    ("how do i return these shoes", "refund"), ("send me a refund for order 42", "refund"),
    ("i cannot log in to my account", "account"), ("reset my password please", "account"),
    ("my account is locked", "account"), ("the login page rejects my email", "account"),
]


def make_vocab(words) -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = sorted({w for w in words} | {f"##{c}" for w in words for c in w} | {c for w in words for c in w})
    return specials + pieces


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny tensors: one thread is many times faster than several contending for two shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_tiny_bert(folder: Path, text: str) -> Path:
    """A 2-layer, 32-wide BertModel and a WordPiece tokenizer over the words (and letters) of `text`: any
    AutoModelFor...from_pretrained(folder) adds a fresh head."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    # transformers v5 takes the vocabulary itself (`vocab=`); a `vocab_file=` argument is silently ignored.
    vocab = {piece: i for i, piece in enumerate(make_vocab(set(text.lower().split())))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny BERT over the words of the intent examples and a few names."""
    words = " ".join(f"{text} {label}" for text, label in INTENT_EXAMPLES)
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"),
                           words + " the a of and to in is it , . ? ! eu germany john smith london acme corp")


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """One saved bare encoder per architecture, dropout off, with the tiny BERT's tokenizer: the `model.name` that
    a run's head and adapter load back onto. Their heads differ: DistilBERT's is pre_classifier + classifier,
    RoBERTa's a dense layer and a projection in one module, BERT's and ALBERT's classifier sits on a pooler."""
    import torch
    from transformers import (AlbertConfig, AlbertModel, AutoTokenizer, BertConfig, BertModel, DistilBertConfig,
                              DistilBertModel, RobertaConfig, RobertaModel)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    small = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 max_position_embeddings=128)
    bases = {
        "bert": (BertModel, BertConfig(**small)),
        "roberta": (RobertaModel, RobertaConfig(**small, pad_token_id=tokenizer.pad_token_id)),
        "distilbert": (DistilBertModel, DistilBertConfig(
            vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64, dropout=0.0,
            attention_dropout=0.0, seq_classif_dropout=0.0, max_position_embeddings=128)),
        "albert": (AlbertModel, AlbertConfig(**small, embedding_size=16, classifier_dropout_prob=0.0)),
    }
    folders = {}
    for arch, (model_class, config) in bases.items():
        folders[arch] = tmp_path_factory.mktemp(arch)
        tokenizer.save_pretrained(folders[arch])
        torch.manual_seed(0)
        model_class(config).save_pretrained(folders[arch])
    return folders


def mha_ft(*args: str, real_model: bool = False) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, as a user runs it. Tiny models get one thread (fastest on a shared machine);
    a real model gets every core and no time limit."""
    env = os.environ if real_model else os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hf_mha_cli", *args], capture_output=True, text=True,
                          timeout=None if real_model else 600, env=env)


def check_adapter_run(out: Path, predictions: str) -> tuple[dict, Path]:
    """A finished adapter run: only the adapter and the head saved (no full weights), `mha-ft eval --run` rescores
    the eval F1 that training reported, and `mha-ft export` merges it into a plain folder beside the run. Returns
    the run's metrics and the export folder."""
    import pytest
    from typer.testing import CliRunner

    from hf_mha_cli.main import app

    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", predictions} <= files
    assert "model.safetensors" not in files
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["trainable_percent"] < 100
    runner = CliRunner()
    assert runner.invoke(app, ["eval", "--run", str(out)]).exit_code == 0
    assert json.loads((out / "eval_metrics.json").read_text())["eval_f1"] == pytest.approx(metrics["eval_f1"])
    plain = out.parent / "plain"
    exported = runner.invoke(app, ["export", "--run", str(out), "--out", str(plain)])
    assert exported.exit_code == 0, exported.output
    assert "merged the lora adapter" in exported.output
    return metrics, plain


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def intent_overrides(root: Path) -> list[str]:
    """The intent examples written to `root` as train (each twice), validation and test (every other) jsonl
    files; returns the data.files.* overrides that point a recipe at them."""
    rows = [{"text": t, "label": label} for t, label in INTENT_EXAMPLES]
    return [f"data.files.train={write_jsonl(root / 'train.jsonl', rows * 2)}",
            f"data.files.validation={write_jsonl(root / 'val.jsonl', rows)}",
            f"data.files.test={write_jsonl(root / 'test.jsonl', rows[::2])}"]


@pytest.fixture
def intent_files(tmp_path) -> dict[str, Path]:
    rows = [{"text": t, "label": l} for t, l in INTENT_EXAMPLES]
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", rows * 2),
        "validation": write_jsonl(tmp_path / "validation.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[::2]),
    }


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir, intent_files):
    """Write a recipe for the tiny model and intent files; returns a function taking extra YAML text."""

    def make(extra: str = "", name: str = "recipe.yaml") -> Path:
        text = f"""
task: text-classification
model:
  name: {tiny_model_dir}
data:
  files:
    train: {intent_files['train']}
    validation: {intent_files['validation']}
    test: {intent_files['test']}
  max_length: 32
train:
  num_train_epochs: 2
  per_device_train_batch_size: 8
  learning_rate: 1.0e-3
  logging_steps: 1
  use_cpu: true
output_dir: {tmp_path / 'run'}
{extra}
"""
        path = tmp_path / name
        path.write_text(text)
        return path

    return make
