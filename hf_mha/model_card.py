"""The README.md model card of every finished run and every export, in the Hugging Face format.

The YAML metadata (huggingface_hub's ModelCardData: base_model, datasets, metrics with their values as a
model-index, pipeline tag, library) is what the hub reads; the body says what was trained, on what, how well,
how long and where, the per-class report, intended use and limits, and how to load the folder. `push_to_hub`
uploads an export with the user's token.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from . import fsutil
from .errors import UserError
from .recipe import EMBEDDED_MODEL, Recipe
from .run_folder import scores_of

CARD_FILE = "README.md"
SPLITS = {"eval": "validation", "test": "test"}
PIPELINE_KWARGS = {"token-classification": ', aggregation_strategy="simple"'}
EXAMPLE_CALL = {
    "text-classification": 'classify("where is my parcel?")',
    "token-classification": 'classify("John Smith works for Acme Corp in London.")',
    "question-answering": 'classify(question="Who works for Acme?", context="John Smith works for Acme Corp.")',
}


def scores(metrics: dict) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} for the validation and test scores in a run's flat metrics."""
    found: dict[str, dict[str, float]] = {}
    for key, value in scores_of(metrics, with_loss=False).items():
        prefix, _, name = key.partition("_")
        found.setdefault(SPLITS[prefix], {})[name] = float(value)
    return found


def card_data(recipe: Recipe, metrics: dict, name: str, library: str = "transformers"):
    from huggingface_hub import EvalResult, ModelCardData

    base = recipe.model.name
    on_hub = not Path(base).exists() or base == EMBEDDED_MODEL  # a local folder is no hub id
    files = [Path(path) for path in (vars(recipe.data.files) if recipe.data.files else {}).values() if path]
    dataset = recipe.data.dataset or (files[0].parent.name if files else "local files")
    results = [
        EvalResult(task_type=recipe.task, dataset_type=recipe.data.dataset or "json", dataset_name=dataset,
                   dataset_config=recipe.data.config, dataset_split=split, metric_type=metric, metric_value=round(value, 4))
        for split, values in scores(metrics).items() for metric, value in values.items()
    ]
    return ModelCardData(
        model_name=name, base_model=base if on_hub else None, library_name=library, pipeline_tag=recipe.task,
        datasets=[recipe.data.dataset] if recipe.data.dataset else None,
        tags=["mha-ft", recipe.tuning.method, *(["onnx"] if library == "onnx" else [])],
        metrics=sorted({result.metric_type for result in results}) or None, eval_results=results or None,
    )


def write_model_card(folder: Path, recipe: Recipe, metrics: dict, run: Path, exported: str | None = None) -> Path:
    """README.md in `folder`: a run (`folder` is `run`) or an export of `run` (`exported` says how it was made)."""
    from huggingface_hub import ModelCard

    name = Path(folder).name
    data = card_data(recipe, metrics, name, "onnx" if (Path(folder) / "model.onnx").is_file() else "transformers")
    body = "\n".join(_body(recipe, metrics, Path(run), Path(folder), exported))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    fsutil.write_text(Path(folder) / CARD_FILE, str(card))
    return Path(folder) / CARD_FILE


def _body(recipe: Recipe, metrics: dict, run: Path, folder: Path, exported: str | None) -> list[str]:
    name = folder.name
    method = "full fine-tuning" if recipe.tuning.method == "full" else f"{recipe.tuning.method} (PEFT)"
    data = recipe.data.dataset or ", ".join(f"{split}: {Path(path).name}" for split, path in
                                           (vars(recipe.data.files) if recipe.data.files else {}).items() if path) or "?"
    lines = [f"# {name}", "",
             f"A {recipe.task} model fine-tuned from `{recipe.model.name}` with [mha-ft](https://pypi.org/project/mha-ft/) "
             f"({method}, {recipe.model.attention} attention) on {data}."]
    if exported:
        lines += ["", f"Exported from the run `{run.resolve()}`: {exported}."]
    lines += ["", "## Results", "", "| split | metric | value |", "|---|---|---|"]
    lines += [f"| {split} | {metric} | {value:.4f} |" for split, values in scores(metrics).items()
              for metric, value in values.items()]
    lines += ["", "## Training", ""] + [f"- {item}" for item in _training_facts(recipe, metrics, run)]
    for prefix, split in SPLITS.items():
        report = run / f"{prefix}_report.txt"
        if report.is_file():
            lines += ["", f"## Per-class report ({split})", "", "```", report.read_text(encoding="utf-8").rstrip(), "```"]
    lines += ["", "## Intended use and limits", "", *_limits(recipe)]
    lines += ["", "## How to load it", "", *_loading(recipe, run, folder, exported)]
    lines += ["", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return lines


def _training_facts(recipe: Recipe, metrics: dict, run: Path) -> list[str]:
    facts = []
    if "train_runtime" in metrics:
        facts.append(f"training time {metrics['train_runtime']:.0f} s, {metrics.get('train_samples_per_second', 0):.1f} "
                     f"samples/s, {metrics.get('train_epoch', 0):.2f} epochs")
    if "trainable_params" in metrics:
        facts.append(f"trainable parameters {int(metrics['trainable_params']):,} of {int(metrics['total_params']):,} "
                     f"({metrics['trainable_percent']:.2f}%)")
    train = recipe.train
    facts.append(f"learning rate {train.get('learning_rate', 5e-5):g}, batch {train.get('per_device_train_batch_size', 32)}, "
                 f"max_length {recipe.data.max_length}, seed {train.get('seed', 42)}")
    env = run / "env.json"
    if env.is_file():
        found = json.loads(env.read_text(encoding="utf-8"))
        devices = ", ".join(found.get("devices") or ["cpu"])
        facts.append(f"hardware: {devices} ({found.get('cpu_count')} CPU cores); torch {found.get('torch')}, "
                     f"transformers {found.get('transformers')}, peft {found.get('peft')}")
    return facts


def _limits(recipe: Recipe) -> list[str]:
    cut = {"truncate": f"Inputs longer than {recipe.data.max_length} tokens are cut to that length.",
           "head_tail": f"Inputs longer than {recipe.data.max_length} tokens keep their head and tail only.",
           "windows": f"Inputs longer than {recipe.data.max_length} tokens are read in overlapping windows."}
    return [
        f"- For {recipe.task} on text like its training data; the scores above hold for that data's validation and "
        "test splits only. Check it on your own data before relying on it.",
        f"- {cut[recipe.data.long_text] if recipe.task == 'text-classification' else f'max_length {recipe.data.max_length} tokens.'}",
        f"- It inherits the biases and the language coverage of `{recipe.model.name}` and of its training data.",
    ]


def _loading(recipe: Recipe, run: Path, written: Path, exported: str | None) -> list[str]:
    from .tuning import EXPORTED_ADAPTER, adapter_family

    folder = "path/to/this/folder"
    if (written / EXPORTED_ADAPTER).is_dir():
        return ["Base model and adapter, not merged: README.txt in this folder says how to load them together.", "",
                f"Or with mha-ft: `mha-ft predict --model {folder} --input new.jsonl --output predictions.jsonl`."]
    if (written / "model.onnx").is_file():
        return ["With onnxruntime through mha-ft (`--int8` for model.int8.onnx), or any ONNX runtime (inputs "
                "input_ids, attention_mask[, token_type_ids]; the tokenizer is in this folder):", "", "```bash",
                f"mha-ft predict --model {folder} --input new.jsonl --output predictions.jsonl", "```"]
    family = adapter_family(run) if not exported else None
    if family is not None:
        imports, loader = family.LOAD_WITH
        return ["The folder holds the adapter and task head; the base weights come from the base model:", "",
                "```python", imports, f"from transformers import AutoConfig, {_auto_class(recipe)}", "",
                f"base = {_auto_class(recipe)}.from_pretrained(\"{recipe.model.name}\", "
                f"config=AutoConfig.from_pretrained(\"{folder}\"))",
                f"model = {loader}(base, \"{folder}\")", "```", "",
                "Or merge it into one plain folder first: `mha-ft export --run RUN --out DIR`."]
    return ["```python", "from transformers import pipeline", "",
            f"classify = pipeline(\"{recipe.task}\", model=\"{folder}\"{PIPELINE_KWARGS.get(recipe.task, '')})",
            EXAMPLE_CALL[recipe.task], "```", "", f"Or with mha-ft: `mha-ft predict --run {folder} --input new.jsonl "
            "--output predictions.jsonl`."]


def _auto_class(recipe: Recipe) -> str:
    from .tasks import get_task

    return get_task(recipe.task).model_class.__name__


def metadata(folder: Path) -> dict:
    """The YAML metadata of the card in `folder`."""
    text = (Path(folder) / CARD_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1])


def check_hub_token(repo: str) -> None:
    """--push-to-hub needs a token; said before any work is done."""
    from huggingface_hub import get_token

    if "/" not in repo.strip("/"):
        raise UserError(f"--push-to-hub: give the repository as user/name or org/name, got {repo!r}")
    if get_token() is None:
        raise UserError("--push-to-hub: no Hugging Face token; run `huggingface-cli login` or set HF_TOKEN, then export again")


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload the export to a (new or existing) model repository; the export stays on disk whatever happens."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                   commit_message="Upload model exported by mha-ft")
    except Exception as exc:  # offline, refused token, no rights: one line, the export is complete on disk
        reason = " ".join(str(exc).split())[:300]
        raise UserError(f"--push-to-hub: could not upload to {repo}: {reason}. The export is complete in {folder}; "
                        f"upload it later with `huggingface-cli upload {repo} {folder}`") from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo}"
