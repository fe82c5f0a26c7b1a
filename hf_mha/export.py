"""`mha-ft export`: a finished run as a model folder that plain transformers loads.

- `full`: the run's model, saved again with its tokenizer.
- PEFT methods that merge (LoRA, DoRA, rsLoRA, AdaLoRA, LoHa, LoKr, IA3, ...): the adapter is folded into the base
  weights (`merge_and_unload`) and the task head trained with it replaces the base's: one plain
  `AutoModelFor...` folder, no peft needed to load it.
- Methods that cannot merge: prefix and prompt tuning (their virtual tokens are extra inputs, not a weight change)
  and our bottleneck adapter (a non-linearity sits between its two projections, so it is no linear map). The
  folder holds the base model and, in `adapter/`, the adapter files, with a README.txt saying how to load them.

Runs are saved in the stock attention layout whatever `model.attention` was, so exports are stock too; a run
whose heads were pruned (`mha-ft heads --prune`) gets them back as zeros, since transformers cannot build layers
with different head counts (the outputs do not change). Every
export is loaded back and its outputs on a probe batch are compared with the run's model; the difference is
reported with the result.

`--format onnx` (`onnx_export.py`) goes one step further: the plain folder is written and loaded back as above,
traced into `model.onnx` (and `model.int8.onnx` with `--quantize int8`), and checked against torch on the run's
validation examples; the folder keeps the graphs, config.json, the tokenizer and the run's recipe.yaml. Methods
that cannot merge have no single graph and are refused before anything loads.
Every export holds the run's recipe.yaml, so `mha-ft eval --model` and `predict --model` need no `--recipe`.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import onnx_export
from .errors import UserError
from .inference import SavedModel, metrics_of
from .models import load_tokenizer, task_model, with_all_heads
from .recipe import Recipe
from .run_folder import RECIPE_FILE, check_new_folder, load_run, run_metrics
from .tasks import get_task
from .training import silence_libraries
from .tuning import EXPORTED_ADAPTER, adapter_family, load_base_model, load_tuned_model, resolve

FORMATS = ("transformers", "onnx")
QUANTIZATIONS = ("int8",)

# Sentence pairs, so that models with segment embeddings see both segments (and QA models a question and a context).
PROBE = (["mha-ft export check", "which probe is longer ?"],
         ["a first sentence", "a second, longer probe sentence, so that the batch has padding in it"])


@dataclass
class Exported:
    out: Path
    merged: bool
    summary: str
    """One line: what was written and why."""
    max_abs_diff: float
    """Largest difference between the exported model's outputs and the run's, on the probe batch."""
    output_format: str = "transformers"
    onnx: onnx_export.OnnxCheck | None = None
    """With `--format onnx`: the graphs against the plain torch model on validation examples."""


def export_run(run: str | Path, out: str | Path, output_format: str = "transformers",
               quantize: str | None = None) -> Exported:
    silence_libraries()  # the summary lines are the output
    run, out = Path(run), Path(out)
    check_format(output_format, quantize)
    recipe = load_run(run)
    check_new_folder(out, "--out", "export never overwrites, choose a new folder")
    reason = cannot_merge(recipe, run)
    if output_format == "onnx" and reason:
        raise _no_graph(recipe, run, reason)
    model = load_tuned_model(recipe, run).eval()
    tokenizer = load_tokenizer(recipe, str(run))
    probe = tokenizer(*PROBE, padding=True, return_tensors="pt")
    # Only the inputs the model names: DistilBERT and RoBERTa-style models have no token_type_ids.
    accepted = inspect.signature(task_model(model).forward).parameters
    probe = {key: value for key, value in probe.items() if key in accepted}
    expected = _outputs(model, probe)

    # Written beside `out` and renamed at the end: an export that fails leaves nothing behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged, summary, unmerged = _write(model, recipe, run, staging)
        tokenizer.save_pretrained(staging)
        shutil.copy2(run / RECIPE_FILE, staging / RECIPE_FILE)
        exported = load_tuned_model(recipe, staging).eval()
        diff = max((a - b).abs().max().item() for a, b in zip(expected, _outputs(exported, probe)))
        check = None
        if output_format == "onnx":
            if unmerged:
                raise _no_graph(recipe, run, unmerged)
            check = _to_onnx(exported, recipe, tokenizer, probe, staging, quantize)
        _write_card(staging, recipe, run, summary, check)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(out, merged, summary, diff, output_format, check)


def _write_card(staging: Path, recipe: Recipe, run: Path, summary: str, check) -> None:
    """The model card of the export: the run's metrics, and what the export is."""
    from .model_card import write_model_card

    how = summary
    if check is not None:
        graphs = "model.onnx and model.int8.onnx (int8 weights)" if (staging / onnx_export.INT8_FILE).is_file() else "model.onnx"
        how = f"{graphs}, traced from the plain model with torch.onnx; " + "; ".join(check.lines())
    write_model_card(staging, recipe, run_metrics(run), run, exported=how)


def check_format(output_format: str, quantize: str | None) -> None:
    if output_format not in FORMATS:
        raise UserError(f"--format: unknown format '{output_format}'; choose {' or '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UserError(f"--quantize: unknown '{quantize}'; choose {', '.join(QUANTIZATIONS)}")
    if quantize is not None and output_format != "onnx":
        raise UserError(f"--quantize {quantize} needs --format onnx: the quantized model is an ONNX graph that "
                        f"onnxruntime runs")


def cannot_merge(recipe: Recipe, run: Path) -> str | None:
    """Why the run's adapter can never fold into the base weights, known from its method alone; None when it may
    (PEFT can still refuse a merge, which `_write` finds out)."""
    family = adapter_family(run)
    if family is None:
        return None
    if family.CANNOT_MERGE:
        return family.CANNOT_MERGE
    if getattr(resolve(recipe), "is_prompt_learning", False):
        return f"{recipe.tuning.method} adds virtual tokens to the input, which no change of weights can replace"
    return None


def _no_graph(recipe: Recipe, run: Path, reason: str) -> UserError:
    return UserError(f"--format onnx: the {recipe.tuning.method} run {run} cannot be one ONNX graph: {reason}; "
                     f"export it with --format transformers (base model + adapter)")


def _to_onnx(model, recipe: Recipe, tokenizer, probe: dict[str, torch.Tensor], staging: Path,
             quantize: str | None) -> onnx_export.OnnxCheck:
    """The plain model in `staging` as ONNX graphs in its place, checked against torch; with `quantize`, the task's
    first metric of torch and of int8 on the same validation examples, scored as `eval` scores."""
    onnx_export.write_onnx(model, probe, staging, quantize)
    sample = onnx_export.validation_sample(recipe, tokenizer, model.config, probe)
    check = onnx_export.compare(model, staging, sample, quantize)
    if quantize and sample.raw is not None:
        task = get_task(recipe.task)
        labels = task.labels_from_config(model.config)
        check.metric = task.metric_names(recipe, labels)[0]
        for engine, scored in (("torch", model), ("int8", onnx_export.load_onnx(staging / onnx_export.INT8_FILE))):
            saved = SavedModel(recipe, task, labels, tokenizer, scored)
            check.metrics[engine] = metrics_of(saved, sample.raw, sample.features, staging)[f"eval_{check.metric}"]
    # The graphs replace the weights: a folder with both would leave eval and predict to guess which one runs.
    for weights in (*staging.glob("*.safetensors"), *staging.glob("*.safetensors.index.json")):
        weights.unlink()
    return check


def _outputs(model, probe: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        outputs = model(**probe)
    return [value for value in outputs.values() if torch.is_tensor(value)]


def _write(model, recipe: Recipe, run: Path, staging: Path) -> tuple[bool, str, str | None]:
    """Write the exported model into `staging`; return whether the adapter was merged, a summary line, and why an
    adapter stayed unmerged (None when there is none left)."""
    from peft import PeftModel

    method = recipe.tuning.method
    reason = cannot_merge(recipe, run)
    if reason is None and isinstance(model, PeftModel):
        try:
            merged = _merge(model)
        except (NotImplementedError, TypeError, ValueError) as exc:
            reason = f"PEFT cannot merge {method}: {str(exc).splitlines()[0]}"
        else:
            with_all_heads(merged).save_pretrained(staging)
            return True, f"merged the {method} adapter and its task head into the base weights", None
    elif reason is None:
        with_all_heads(model).save_pretrained(staging)
        return False, "full fine-tuning: the run's model, as a plain transformers folder", None
    _write_unmerged(recipe, run, staging, reason)
    return False, f"not merged: {reason}; wrote the base model, {EXPORTED_ADAPTER}/ and README.txt", reason


def _merge(model):
    """Fold the adapter into the base weights, with the trained task head in place of the base's."""
    from peft.utils import ModulesToSaveWrapper

    # PEFT's merge for IA3, LoHa and LoKr can only unwrap a head that is a single layer with a weight (not
    # RoBERTa's classifier or BERT's pooler): put each trained head in place first, for every method alike.
    base = model.get_base_model()
    for name, module in list(base.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(base.get_submodule(parent), child, module.modules_to_save[module.active_adapter])
    return model.merge_and_unload()


def _write_unmerged(recipe: Recipe, run: Path, staging: Path, reason: str) -> None:
    family = adapter_family(run)
    imports, loader = family.LOAD_WITH
    model_class = get_task(recipe.task).model_class
    with_all_heads(load_base_model(recipe, model_class, run)).save_pretrained(staging)
    (staging / EXPORTED_ADAPTER).mkdir()
    for name in family.ADAPTER_FILES:
        shutil.copy2(run / name, staging / EXPORTED_ADAPTER / name)
    model_class = model_class.__name__
    (staging / "README.txt").write_text(
        f"Exported by mha-ft from the run {run.resolve()} (tuning.method: {recipe.tuning.method}).\n\n"
        f"The adapter is not merged into the base weights: {reason}.\n\n"
        f"This folder holds the base model {recipe.model.name} (config.json, model.safetensors, tokenizer) and,\n"
        f"in {EXPORTED_ADAPTER}/, the adapter with the trained task head. Load them together:\n\n"
        f"    {imports}\n"
        f"    from transformers import {model_class}\n\n"
        f"    folder = \"path/to/this/folder\"\n"
        f"    base = {model_class}.from_pretrained(folder)\n"
        f"    model = {loader}(base, folder + \"/{EXPORTED_ADAPTER}\")\n\n"
        f"The task head inside model.safetensors is untrained: the adapter's copy replaces it.\n"
        f"With mha-ft: mha-ft eval --model path/to/this/folder (the run's recipe.yaml is here)\n",
        encoding="utf-8",
    )
