"""ONNX for `mha-ft export --format onnx`, and an exported graph as the model that `eval` and `predict` run.

- `write_onnx`: the plain transformers model that `export` builds (adapters merged, stock attention), traced by
  torch's own exporter (`torch.onnx.export(..., dynamo=True)`) with dynamic batch and sequence axes into
  `model.onnx`; with `quantize="int8"` also `model.int8.onnx`: onnxruntime's dynamic quantization, int8 weights,
  activations quantized per batch as they come.
- `compare`: onnxruntime (CPU) against torch on the same batches of the run's validation examples: the largest
  output difference, how often int8 picks what torch picks, and each engine's examples/s, timed batch by batch in
  turn (so that a busy machine slows every engine alike) over passes that add up to a few seconds.
- `OnnxModel`: an onnxruntime session as a torch module whose forward returns what the transformers model returns
  (logits, or start and end logits, and its loss when labels come with the inputs), so that every task's
  Trainer-based scoring and prediction runs on it unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .data import load_split
from .errors import UserError
from .recipe import Recipe
from .tasks import get_task

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Largest |fp32 ONNX - torch| output difference that counts as the same model.
TOLERANCE = 1e-4
#: Validation examples the check runs: enough for a metric and a steady speed, few enough to take seconds.
CHECK_EXAMPLES = 256
#: The timed passes over the sample repeat until the engines have run this long in all (at most MAX_PASSES).
TIMED_SECONDS, MAX_PASSES = 5.0, 10
#: A protobuf file holds at most 2 GiB; larger models keep their weights in a `.data` file beside the graph.
PROTOBUF_LIMIT = 2**31 - 2**26


# --------------------------------------------------------------------------- writing the graphs


def write_onnx(model: nn.Module, probe: dict[str, torch.Tensor], folder: Path, quantize: str | None) -> None:
    """`model` (a plain transformers model) as `folder/model.onnx`, taking the inputs `probe` holds, batch and
    sequence length free; with `quantize` also `folder/model.int8.onnx`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with torch.no_grad():
        names = [key for key, value in model(**probe).items() if torch.is_tensor(value)]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > PROTOBUF_LIMIT
    with _quiet():
        torch.onnx.export(
            model, (), str(folder / ONNX_FILE), kwargs=probe, dynamo=True, verbose=False, external_data=large,
            dynamic_shapes={key: {0: batch, 1: sequence} for key in probe}, output_names=names,
        )
        if quantize:
            quantize_dynamic(folder / ONNX_FILE, folder / INT8_FILE, weight_type=QuantType.QInt8,
                             use_external_data_format=large)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx prints its steps and warns about torchvision ops it skips and about deprecations inside torch;
    onnxruntime's quantizer logs advice on pre-processing. None of it is for the user of `export`, whose summary
    says what came out; errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxruntime", "")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# --------------------------------------------------------------------------- the graph as a model


def session(path: Path):
    """An onnxruntime CPU session with as many threads as torch uses here (the same share of a shared machine)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its graph-rewrite notes are not the user's business
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An exported ONNX graph behind the forward of a transformers task model: torch tensors in, a ModelOutput of
    torch tensors out, `.config` the export's config.json. Holds no parameters; runs on the CPU, and hands its
    outputs back on the device the inputs came from."""

    main_input_name = "input_ids"

    def __init__(self, path: str | Path, graph=None):
        from transformers import AutoConfig

        super().__init__()
        path = Path(path)
        self.config = AutoConfig.from_pretrained(path.parent)
        self.session = graph if graph is not None else session(path)
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        outputs = self._run(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self._output(outputs, labels=labels)

    def _run(self, **inputs) -> dict[str, torch.Tensor]:
        device = inputs["input_ids"].device
        feed = {name: inputs[name].cpu().numpy() for name in self.input_names}
        values = self.session.run(self.output_names, feed)
        return {name: torch.from_numpy(value).to(device) for name, value in zip(self.output_names, values)}

    def _output(self, outputs: dict[str, torch.Tensor], labels):
        from transformers.loss.loss_utils import ForSequenceClassificationLoss, ForTokenClassification
        from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

        logits = outputs["logits"]
        tokens = logits.dim() == 3
        loss = None
        if labels is not None and tokens:  # the losses the transformers models compute: eval reports the same eval_loss
            loss = ForTokenClassification(logits, labels, self.config)
        elif labels is not None:
            loss = ForSequenceClassificationLoss(labels, logits, self.config)
        return (TokenClassifierOutput if tokens else SequenceClassifierOutput)(loss=loss, logits=logits)


class OnnxModelForQuestionAnswering(OnnxModel):
    """The same for QA graphs: start and end logits. The class name and the forward's position arguments are what
    the Trainer reads to find a QA model's labels."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None):
        from transformers.loss.loss_utils import ForQuestionAnsweringLoss
        from transformers.modeling_outputs import QuestionAnsweringModelOutput

        outputs = self._run(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        loss = ForQuestionAnsweringLoss(outputs["start_logits"], outputs["end_logits"], start_positions, end_positions)
        return QuestionAnsweringModelOutput(loss=loss, **outputs)


def onnx_file(folder: str | Path, int8: bool) -> Path | None:
    """The graph to run from `folder` (`model.int8.onnx` with `int8`), or None for a folder without a graph."""
    folder = Path(folder)
    if not int8:
        return folder / ONNX_FILE if (folder / ONNX_FILE).is_file() else None
    if not (folder / INT8_FILE).is_file():
        how = "--quantize int8" if (folder / ONNX_FILE).is_file() else "--format onnx --quantize int8"
        raise UserError(f"--int8: {folder} holds no {INT8_FILE}; export the run with mha-ft export {how}, "
                        f"or drop --int8")
    return folder / INT8_FILE


def load_onnx(path: Path) -> OnnxModel:
    """The graph at `path` as the model class its outputs call for."""
    graph = session(path)
    outputs = {node.name for node in graph.get_outputs()}
    return (OnnxModelForQuestionAnswering if "start_logits" in outputs else OnnxModel)(path, graph)


# --------------------------------------------------------------------------- ONNX against torch


@dataclass
class Sample:
    """What the check runs on: validation examples through the task's preprocess and collator (`raw` and
    `features` kept for scoring), or the probe batch when the validation data cannot be read (`why`)."""

    batches: list[dict[str, torch.Tensor]]
    examples: int
    raw: object = None
    features: object = None
    why: str | None = None

    @property
    def source(self) -> str:
        return (f"{self.examples} validation examples" if self.why is None
                else f"the probe batch of {self.examples} (no validation data: {self.why})")


def validation_sample(recipe: Recipe, tokenizer, config, probe: dict[str, torch.Tensor]) -> Sample:
    """Up to CHECK_EXAMPLES of the run's validation examples, batched as evaluation batches them, with only the
    inputs in `probe` (those the model takes)."""
    from .training import eval_batch_size

    task = get_task(recipe.task)
    try:
        raw = load_split(recipe, "validation")
    except UserError as exc:
        return Sample([probe], len(probe["input_ids"]), why=str(exc))
    raw = raw.select(range(min(CHECK_EXAMPLES, len(raw))))
    features = task.preprocess(raw, tokenizer, recipe, task.labels_from_config(config), training=False)
    inputs = features.select_columns([name for name in probe if name in features.column_names])
    collate, size = task.collator(tokenizer, recipe), eval_batch_size(recipe)
    batches = [collate([inputs[i] for i in range(start, min(start + size, len(inputs)))])
               for start in range(0, len(inputs), size)]
    batches = [{name: batch[name] for name in probe} for batch in batches]
    return Sample(batches, len(raw), raw, features)


@dataclass
class OnnxCheck:
    """fp32 ONNX (and int8) against the torch model they were exported from, measured in one process."""

    source: str
    """What was run: "256 validation examples", or the probe batch and why."""
    max_abs_diff: float
    """Largest |fp32 ONNX - torch| over every output of every batch."""
    examples_per_second: dict[str, float]
    """Per engine ("torch", "onnx", "int8"), on the same batches."""
    threads: int
    batch_size: int
    passes: int
    """Timed passes over the sample (the differences come from the first)."""
    int8_max_abs_diff: float | None = None
    int8_agreement: float | None = None
    """Share of predictions (argmax of each output; real tokens only for token outputs) int8 shares with torch."""
    metric: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    """The task's first metric per engine ("torch", "int8") on the same examples."""

    @property
    def within_tolerance(self) -> bool:
        return self.max_abs_diff <= TOLERANCE

    def lines(self) -> list[str]:
        verdict = (f"within the {TOLERANCE:.0e} tolerance" if self.within_tolerance else
                   f"EXCEEDS the {TOLERANCE:.0e} tolerance: the graph does not compute what the torch model "
                   f"computes; do not deploy it")
        lines = [f"ONNX fp32 vs torch on {self.source}: max |logit diff| {self.max_abs_diff:.1e} ({verdict})"]
        if self.int8_max_abs_diff is not None:
            parts = []
            if self.metric:
                before, after = self.metrics["torch"], self.metrics["int8"]
                parts.append(f"{self.metric} {before:.4f} -> {after:.4f} ({after - before:+.4f})")
            if self.int8_agreement is not None:
                parts.append(f"same argmax as torch on {100 * self.int8_agreement:.1f}%")
            parts.append(f"max |logit diff| {self.int8_max_abs_diff:.1e}")
            lines.append("ONNX int8 vs torch: " + "; ".join(parts))
        speed = self.examples_per_second
        timed = [f"torch {speed['torch']:.1f}",
                 f"ONNX fp32 {speed['onnx']:.1f} ({speed['onnx'] / speed['torch']:.2f}x torch)"]
        if "int8" in speed:
            timed.append(f"ONNX int8 {speed['int8']:.1f} ({speed['int8'] / speed['onnx']:.2f}x ONNX fp32, "
                         f"{speed['int8'] / speed['torch']:.2f}x torch)")
        lines.append(f"examples/s (CPU, {self.threads} thread{'s' * (self.threads > 1)}, batch {self.batch_size}, "
                     f"{self.passes} pass{'es' * (self.passes > 1)}): " + ", ".join(timed))
        return lines


def compare(model: nn.Module, folder: Path, sample: Sample, quantize: str | None) -> OnnxCheck:
    """Run torch, fp32 ONNX (and int8) on every batch of `sample`; their differences and speeds."""
    engines: dict[str, Callable] = {"torch": _torch_engine(model), "onnx": _onnx_engine(folder / ONNX_FILE)}
    if quantize:
        engines["int8"] = _onnx_engine(folder / INT8_FILE)
    for run in engines.values():  # the first call of each engine allocates and plans: not timed
        run(sample.batches[0])
    seconds = dict.fromkeys(engines, 0.0)
    diffs = dict.fromkeys(engines, 0.0)
    agree = total = passes = 0
    while passes == 0 or (sum(seconds.values()) < TIMED_SECONDS and passes < MAX_PASSES):
        for batch in sample.batches:
            outputs = {}
            for name, run in engines.items():
                start = time.perf_counter()
                outputs[name] = run(batch)
                seconds[name] += time.perf_counter() - start
            if passes:
                continue  # outputs are compared on the first pass; the others only time the engines
            for name in engines:
                diffs[name] = max(diffs[name], *(np.abs(a - b).max() for a, b in zip(outputs[name], outputs["torch"])))
            if quantize:
                same, count = _agreement(outputs["int8"], outputs["torch"], batch["attention_mask"].numpy())
                agree, total = agree + same, total + count
        passes += 1
    check = OnnxCheck(sample.source, float(diffs["onnx"]),
                      {name: passes * sample.examples / max(seconds[name], 1e-9) for name in engines},
                      torch.get_num_threads(), len(sample.batches[0]["input_ids"]), passes)
    if quantize:
        check.int8_max_abs_diff = float(diffs["int8"])
        check.int8_agreement = agree / total if total else None
    return check


def _torch_engine(model: nn.Module) -> Callable:
    def run(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = model(**batch)
        return [value.numpy() for value in outputs.values() if torch.is_tensor(value)]

    return run


def _onnx_engine(path: Path) -> Callable:
    graph = session(path)
    names = [node.name for node in graph.get_inputs()]

    def run(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        return graph.run(None, {name: batch[name].numpy() for name in names})

    return run


def _agreement(outputs: list[np.ndarray], reference: list[np.ndarray], mask: np.ndarray) -> tuple[int, int]:
    """(matches, choices): argmax of each output against the reference's, on real tokens for per-token outputs;
    outputs of one value per example (regression) choose nothing."""
    same = count = 0
    for output, expected in zip(outputs, reference):
        if output.shape[-1] == 1:
            continue
        hits = output.argmax(-1) == expected.argmax(-1)
        if hits.ndim == 2:  # one choice per token
            hits = hits[mask.astype(bool)]
        same, count = same + int(hits.sum()), count + hits.size
    return same, count
