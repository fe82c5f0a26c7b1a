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
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .models import load_tokenizer, task_model, with_all_heads
from .recipe import Recipe
from .run_folder import check_new_folder, load_run
from .tasks import get_task
from .tuning import EXPORTED_ADAPTER, adapter_family, load_base_model, load_tuned_model

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


def export_run(run: str | Path, out: str | Path) -> Exported:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # the summary line is the output
    run, out = Path(run), Path(out)
    recipe = load_run(run)
    check_new_folder(out, "--out", "export never overwrites, choose a new folder")
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
        merged, summary = _write(model, recipe, run, staging)
        tokenizer.save_pretrained(staging)
        exported = load_tuned_model(recipe, staging).eval()
        diff = max((a - b).abs().max().item() for a, b in zip(expected, _outputs(exported, probe)))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(out, merged, summary, diff)


def _outputs(model, probe: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        outputs = model(**probe)
    return [value for value in outputs.values() if torch.is_tensor(value)]


def _write(model, recipe: Recipe, run: Path, staging: Path) -> tuple[bool, str]:
    """Write the exported model into `staging`; return whether the adapter was merged, and a summary line."""
    from peft import PeftModel

    method = recipe.tuning.method
    if isinstance(model, PeftModel):
        if model.peft_config[model.active_adapter].is_prompt_learning:
            reason = f"{method} adds virtual tokens to the input, which no change of weights can replace"
        else:
            try:
                merged = _merge(model)
            except (NotImplementedError, TypeError, ValueError) as exc:
                reason = f"PEFT cannot merge {method}: {str(exc).splitlines()[0]}"
            else:
                with_all_heads(merged).save_pretrained(staging)
                return True, f"merged the {method} adapter and its task head into the base weights"
    elif adapter_family(run) is not None:
        reason = adapter_family(run).CANNOT_MERGE
    else:
        with_all_heads(model).save_pretrained(staging)
        return False, "full fine-tuning: the run's model, as a plain transformers folder"
    _write_unmerged(recipe, run, staging, reason)
    return False, f"not merged: {reason}; wrote the base model, {EXPORTED_ADAPTER}/ and README.txt"


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
        f"With mha-ft: mha-ft eval --model path/to/this/folder --recipe RECIPE\n",
        encoding="utf-8",
    )
