"""`mha-ft bench --profile`: where a training step's time goes, for the plain Trainer setup and for mha-ft's
defaults, from torch.profiler over real `Trainer.train` steps (data loading and collation, forward, backward,
clipping, optimizer, logging: everything a step does).

Each case trains a random-init BERT of a size (`mini`: MiniLM-L6's shape, `base`: bert-base's) on synthetic
sentences with a length distribution (`sst2`: sequence classification on SST-2's token lengths; `conll`: token
classification, 9 tags, on CoNLL-2003's), batch 32, dynamic padding, random order, the full 30,522-row
vocabulary. Two setups train the same weights on the same batches:

- `plain`: what run_glue / run_ner do: `transformers.Trainer` defaults (fp32, fused AdamW), stock sdpa
  attention, DataCollatorWithPadding / DataCollatorForTokenClassification;
- `mha-ft`: our defaults: `RunTrainer`, our attention (unpadded), `train.bf16: auto`, lazy embeddings, fast
  dropout masks.

After warm-up steps, `steps` steps are timed without the profiler (the step time reported), then `steps` more
run under it. Each op's own (self) time goes to one category, by the op or the region it runs in; what the
ops do not account for is Python: the Trainer's loop, callbacks, the autograd engine's bookkeeping and the
profiler's own cost per op, which inflates the many small ops of a step a little.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

#: Categories in report order; "Python" is the step's wall time the profiled ops do not cover.
CATEGORIES = ("GEMM", "attention", "embedding gradient", "optimizer", "data collation", "dropout RNG",
              "other ops", "Python (Trainer, autograd, profiler)")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation")
#: Regions recognised by a name that holds one of these (the op itself or a parent); first match wins.
REGIONS = (
    ("optimizer", ("Optimizer.step", "Optimizer.zero_grad")),
    ("data collation", ("enumerate(DataLoader)",)),
    ("embedding gradient", ("embedding_dense_backward", "EmbeddingBackward", "embedding_sparse_backward")),
    ("attention", ("scaled_dot_product", "ScaledDotProduct", "flex_attention", "varlen_attn")),
)
SETUPS = ("plain", "mha-ft")
TASKS = {"sst2": "text-classification", "conll": "token-classification"}
NUM_TAGS = 9  # CoNLL-2003's IOB2 tags


@dataclass
class ProfileRecord:
    size: str
    lengths: str
    setup: str
    precision: str
    step_ms: float  # median over the timed steps, profiler off
    real_tokens: float  # per step, mean
    padded_tokens: float  # per step as the stock model sees them: mean over random batches of these lengths
    shares: dict[str, float]  # category -> share of the profiled wall time
    profiled_step_ms: float


def profile_case(size: str, lengths_name: str, setup: str, steps: int, warmup: int, batch: int, seed: int,
                 device: str) -> ProfileRecord:
    from hf_mha.bench_measure import VOCAB_SIZE, bert_config, fitted_lengths

    rounds = warmup + 2 * steps
    lengths = fitted_lengths(batch * rounds, random.Random(seed), lengths_name)
    token_task = lengths_name == "conll"
    config = bert_config(size, VOCAB_SIZE, num_labels=NUM_TAGS if token_task else 2)
    torch.manual_seed(seed)
    model = _model(config, token_task, setup)
    dataset = _dataset(lengths, config.vocab_size, token_task, seed)
    timer = _StepTimer(warmup, steps, device)
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(model, dataset, token_task, setup, out, batch, rounds, seed, timer)
        trainer.train()
    # The Trainer draws its own random order, so the padding is that of random batches of these lengths.
    shuffled = random.Random(seed).sample(lengths, len(lengths))
    batches = [shuffled[i : i + batch] for i in range(0, len(shuffled), batch)]
    precision = "bf16 autocast" if trainer.args.bf16 else "fp16 autocast" if trainer.args.fp16 else "fp32"
    return ProfileRecord(
        size=size, lengths=lengths_name, setup=setup, precision=precision,
        step_ms=sorted(timer.seconds)[len(timer.seconds) // 2] * 1e3,
        real_tokens=sum(lengths) / rounds, padded_tokens=sum(len(b) * max(b) for b in batches) / len(batches),
        shares=timer.shares, profiled_step_ms=timer.profiled_seconds / steps * 1e3,
    )


def _model(config, token_task: bool, setup: str):
    from transformers import BertForSequenceClassification, BertForTokenClassification

    from hf_mha.models import use_attention

    model = (BertForTokenClassification if token_task else BertForSequenceClassification)(config)
    model.set_attn_implementation("sdpa")
    return use_attention(model, "mha", backend="auto", unpad=True) if setup == "mha-ft" else model


def _dataset(lengths: list[int], vocab_size: int, token_task: bool, seed: int):
    from datasets import Dataset

    rng = random.Random(seed)
    ids = [[rng.randrange(5, vocab_size) for _ in range(n)] for n in lengths]
    labels = [[rng.randrange(NUM_TAGS) for _ in range(n)] for n in lengths] if token_task \
        else [rng.randrange(2) for _ in lengths]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * n for n in lengths], "labels": labels})


def _tokenizer():
    """A fast tokenizer that only pads: the collators need one, and the ids are synthetic."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]")),
                                   pad_token="[PAD]", unk_token="[UNK]")


def _trainer(model, dataset, token_task: bool, setup: str, out: str, batch: int, rounds: int, seed: int, timer):
    from transformers import (DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.trainer_callback import PrinterCallback

    from hf_mha.recipe import recipe_from_dict
    from hf_mha.speedups import fast_dropout, lazy_embedding_optimizer
    from hf_mha.trainer import RunTrainer
    from hf_mha.training import precision

    tokenizer = _tokenizer()
    collator = (DataCollatorForTokenClassification if token_task else DataCollatorWithPadding)(tokenizer)
    common = dict(output_dir=out, per_device_train_batch_size=batch, max_steps=rounds, seed=seed, report_to="none",
                  save_strategy="no", eval_strategy="no", disable_tqdm=True, dataloader_pin_memory=False)
    if setup == "plain":
        args = TrainingArguments(**common)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    else:
        recipe = recipe_from_dict({"output_dir": out})  # the built-in train: defaults, as `mha-ft train` has them
        fast_dropout(model)
        args = TrainingArguments(**common, logging_steps=10, **precision(recipe))
        trainer = RunTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer],
                             optimizer_cls_and_kwargs=lazy_embedding_optimizer(model, args, None))
    trainer.remove_callback(PrinterCallback)  # its log lines would break into the bench's status line
    return trainer


class _StepTimer(TrainerCallback):
    """Times steps warmup+1 .. warmup+steps, then profiles the next `steps` steps (each window from the end of
    the step before it, so it holds the loading of its own batch)."""

    def __init__(self, warmup: int, steps: int, device: str):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seconds: list[float] = []
        self.shares: dict[str, float] = {}
        self.profiled_seconds = 0.0
        self._last = self._last_start = 0.0
        self._profiler = None

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        now = time.perf_counter()
        step = state.global_step
        if self.warmup < step <= self.warmup + self.steps:
            self.seconds.append(now - self._last)
        if step == self.warmup + self.steps:
            self._profiler = _profiler(self.device)
            self._profiler.__enter__()
            now = time.perf_counter()
        elif step == self.warmup + 2 * self.steps:
            self._profiler.__exit__(None, None, None)
            self.profiled_seconds = now - self._last_start
            self.shares = categorise(self._profiler.events(), self.profiled_seconds, self.device)
        if step == self.warmup + self.steps:
            self._last_start = now
        self._last = now

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


def _profiler(device: str):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    return profile(activities=activities)


def categorise(events, wall_seconds: float, device: str) -> dict[str, float]:
    """Each event's own time in its category, as shares of `wall_seconds`; on CUDA the kernels' device time.
    The rest of the wall time is Python (on CUDA: the GPU idle, waiting for the host)."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        own = (event.self_device_time_total if device == "cuda" else event.self_cpu_time_total) / 1e6
        if own <= 0:
            continue
        totals[_category(event)] += own
    covered = sum(totals.values())
    totals[CATEGORIES[-1]] = max(0.0, wall_seconds - covered)
    return {name: seconds / wall_seconds for name, seconds in totals.items()}


def _category(event) -> str:
    names = []
    node = event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    for category, markers in REGIONS:
        if any(marker in name for name in names for marker in markers):
            return category
    if event.name in GEMM_OPS or event.name.startswith(("aten::mkldnn_", "aten::_mkldnn")):
        return "GEMM"
    if event.name in ("aten::bernoulli_", "aten::bernoulli", "aten::native_dropout", "aten::random_"):
        return "dropout RNG"
    return "other ops"


def run_profile(sizes, lengths_names, steps: int, warmup: int, batch: int, seed: int, device: str,
                progress=lambda message: None) -> list[ProfileRecord]:
    records = []
    for size in sizes:
        for lengths_name in lengths_names:
            for setup in SETUPS:
                progress(f"profile: {size}, {lengths_name} lengths, {setup}")
                records.append(profile_case(size, lengths_name, setup, steps, warmup, batch, seed, device))
    return records


def print_profile(records: list[ProfileRecord], console) -> None:
    from rich.table import Table

    table = Table(title="profile: share of a training step's wall time (torch.profiler, self time per op)",
                  caption="step ms: median step without the profiler; tokens: real / padded per step")
    for column in ("model", "lengths", "setup", "step ms", "tokens", *CATEGORIES):
        table.add_column(column, justify="left" if column in ("model", "lengths", "setup") else "right")
    for r in records:
        table.add_row(r.size, r.lengths, f"{r.setup} ({r.precision})", f"{r.step_ms:.0f}",
                      f"{r.real_tokens:.0f}/{r.padded_tokens:.0f}", *(f"{r.shares[c]:.0%}" for c in CATEGORIES))
    console.print(table)
