"""The `mha-ft` command line: one typed function per verb, each a thin call into `hf_mha`.

Bad input raises `hf_mha.errors.UserError`; `main()` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from hf_mha.errors import RunStopped, UserError

app = typer.Typer(
    name="mha-ft",
    help="Fine-tune BERT-style encoders for classification, NER and QA, with our own multi-head attention.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _main_process_console() -> Console | None:
    """Only the main process prints under `accelerate launch`."""
    from accelerate import PartialState

    return console if PartialState().is_main_process else None


RecipeOption = typer.Option(..., "--recipe", "-r", help="Recipe file or built-in recipe name (see `mha-ft ls`).")
OverridesArgument = typer.Argument(None, help="Dotted overrides, e.g. train.learning_rate=3e-5 output_dir=runs/x")
FormatOption = typer.Option(
    "auto", "--format", help="Format of the file: auto (by extension), csv, tsv, json, jsonl, parquet, conll, squad.",
)
OverwriteOption = typer.Option(False, "--overwrite", help="Replace what output_dir holds (a finished or an unfinished run).")
ResumeOption = typer.Option(
    None, "--resume/--no-resume",
    help="Continue from the last complete checkpoint (default: automatic when output_dir holds an unfinished run).",
)


@app.command()
def train(
    recipe: str = RecipeOption,
    overrides: Optional[list[str]] = OverridesArgument,
    overwrite: bool = OverwriteOption,
    resume: Optional[bool] = ResumeOption,
) -> None:
    """Fine-tune a model as a recipe says; writes the run folder (model, metrics.json, reports, plots).

    Example: mha-ft train --recipe quickstart train.num_train_epochs=2 output_dir=runs/qs
    """
    from hf_mha.recipe import load_recipe
    from hf_mha.training import train as run_training

    run_training(load_recipe(recipe, overrides), overwrite=overwrite, resume=resume, console=_main_process_console())


ModelOption = typer.Option(
    None, "--model", help="A model folder instead of --run: an mha-ft export (transformers or ONNX), or any with "
                          "--recipe.")
Int8Option = typer.Option(False, "--int8", help="With an ONNX export: run its model.int8.onnx instead of model.onnx.")


@app.command("eval")
def eval_(
    run: Optional[str] = typer.Option(None, "--run", help="A finished run folder."),
    model: Optional[str] = ModelOption,
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe for --model (default: its recipe.yaml)."),
    split: str = typer.Option("validation", "--split", help="Split of the recipe's data: train, validation, test."),
    file: Optional[str] = typer.Option(None, "--file", help="Score a labelled file instead of a split."),
    file_format: str = FormatOption,
    int8: bool = Int8Option,
    overrides: Optional[list[str]] = OverridesArgument,
) -> None:
    """Score a run or a model on any split or labelled file; writes <split>_metrics.json and a report (into the
    run, the --model folder, or --recipe's output_dir).

    Example: mha-ft eval --run runs/quickstart --split test
    """
    from hf_mha.inference import evaluate_run

    evaluate_run(run=run, model=model, recipe_name=recipe, split=split, file=file, file_format=file_format,
                 overrides=overrides, console=_main_process_console(), int8=int8)


@app.command()
def predict(
    run: Optional[str] = typer.Option(None, "--run", help="A finished run folder (or give --model)."),
    input: str = typer.Option(..., "--input", "-i", help="csv / tsv / json / jsonl / parquet with the recipe's text columns."),
    output: str = typer.Option(..., "--output", "-o", help="Where to write one JSON line per input."),
    input_format: str = FormatOption,
    model: Optional[str] = ModelOption,
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe for --model (default: its recipe.yaml)."),
    int8: bool = Int8Option,
) -> None:
    """Predict labels (with probabilities) for new examples, with a run or an exported model (an ONNX export runs
    in onnxruntime).

    Example: mha-ft predict --model models/qs-onnx --int8 --input new.jsonl --output preds.jsonl
    """
    from hf_mha.inference import predict as run_predict

    run_predict(run, input, output, input_format, console=console, model=model, recipe_name=recipe, int8=int8)


@app.command("ls")
def list_recipes() -> None:
    """List the built-in recipes.

    Example: mha-ft ls
    """
    from rich import box
    from rich.table import Table

    from hf_mha.recipe_builtins import builtin_summaries

    # Two columns, the second three short lines, so the table fits an 80-column terminal without cutting
    # a recipe name or a path in the middle of a word.
    table = Table("recipe", "what it trains", box=box.SIMPLE_HEAD, show_edge=False)
    table.columns[0].no_wrap = True
    for row in builtin_summaries():
        method = "full fine-tuning" if row["tuning"] == "full" else row["tuning"]
        table.add_row(f"[bold]{row['name']}[/]", f"{row['task']}, {method}\nmodel {row['model']}\ndata  {row['data']}")
    console.print("Built-in recipes (--recipe NAME, or `mha-ft cp NAME FILE` to edit a copy):")
    console.print(table)


@app.command()
def cp(
    name: str = typer.Argument(..., help="Built-in recipe name."),
    destination: Path = typer.Argument(..., help="File (or folder) to copy it to."),
) -> None:
    """Copy a built-in recipe to edit it.

    Example: mha-ft cp sst2-full my-sst2.yaml
    """
    from hf_mha.recipe_builtins import copy_builtin

    console.print(f"Copied {name} to {copy_builtin(name, destination)}")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Finished run folders, or globs such as 'runs/sst2-*'."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: the metric per run and the overlaid validation curves."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric for --plot (default: the first run's best-checkpoint metric)."),
    speed: bool = typer.Option(False, "--speed", help="Also measure CPU predict samples/s of every run side by side, parameters and weights size (the accuracy/speed frontier)."),
) -> None:
    """Compare finished runs: the recipe keys that differ, every metric, trainable parameters, time, samples/s.

    Example: mha-ft compare runs/sst2-full runs/sst2-lora --plot compare.png
    """
    from rich.table import Table

    from hf_mha.compare import compare as compare_runs

    folders, labels, rows, written = compare_runs(runs, plot, metric, speed)
    table = Table("", *(folder.name for folder in folders), title="Runs compared (recipe keys that differ, then results)")
    for label, cells in zip(labels, rows):
        table.add_row(label, *(escape(cell) for cell in cells))
    console.print(table)
    if written is not None:
        console.print(f"Wrote {written}")


@app.command()
def distill(
    teacher: str = typer.Option(..., "--teacher", "-t", help="A finished run of the same task and labels."),
    recipe: str = RecipeOption,
    layers: Optional[int] = typer.Option(
        None, "--layers", help="Student of this many evenly spaced layers of the teacher, starting from its "
                               "fine-tuned weights (sets model.name to the teacher run and model.num_layers)."),
    overrides: Optional[list[str]] = OverridesArgument,
    overwrite: bool = OverwriteOption,
    resume: Optional[bool] = ResumeOption,
) -> None:
    """Train a student on the recipe's data and the teacher's soft targets (KL at distill.temperature, weight
    distill.alpha against the gold labels): `mha-ft train` with distill.teacher set.

    Example: mha-ft distill --teacher runs/quickstart --recipe quickstart --layers 3 output_dir=runs/qs-3l
    """
    from hf_mha.recipe import load_recipe
    from hf_mha.training import train as run_training

    student = [f"model.name={teacher}", f"model.num_layers={layers}"] if layers is not None else []
    given = load_recipe(recipe, [*student, *(overrides or []), f"distill.teacher={teacher}"])
    run_training(given, overwrite=overwrite, resume=resume, console=_main_process_console())


@app.command()
def compress(
    run: str = typer.Option(..., "--run", help="A finished full fine-tuning run."),
    out: str = typer.Option(..., "--out", "-o", help="New folder for the stages (each a run folder)."),
    heads: Optional[float] = typer.Option(None, "--heads", help="Prune this fraction of the heads, least important first."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Keep this many evenly spaced layers (a student)."),
    distill: bool = typer.Option(False, "--distill", help="Every trained stage learns the run's soft targets too."),
    overrides: Optional[list[str]] = OverridesArgument,
) -> None:
    """Make a run smaller and faster: drop layers (a student trained from the run's weights), prune heads and train
    again, distilling from the run with --distill; then the accuracy/speed frontier of the run and each stage,
    measured side by side on CPU.

    Example: mha-ft compress --run runs/quickstart --layers 3 --heads 0.5 --distill --out runs/qs-small
    """
    from rich.table import Table

    from hf_mha.compare import comparison, speed_rows
    from hf_mha.compress import plan_compress, run_compress

    stages = plan_compress(Path(run), Path(out), heads, layers, distill, overrides)
    folders = run_compress(Path(run), stages, heads, console=console)
    labels, rows = comparison(folders)
    with console.status("measuring CPU predict speed"):
        more_labels, more_rows, _ = speed_rows(folders)
    table = Table("", *(folder.name for folder in folders), title="Accuracy against speed")
    for label, cells in zip(labels + more_labels, rows + more_rows):
        if not label.startswith(("train_", "trainable_")):
            table.add_row(label, *(escape(cell) for cell in cells))
    console.print(table)


@app.command()
def search(
    recipe: str = RecipeOption,
    trials: int = typer.Option(..., "--trials", "-n", help="Trials to finish (completed or pruned), counting earlier ones."),
    overrides: Optional[list[str]] = OverridesArgument,
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the search in output_dir over."),
) -> None:
    """Hyperparameter search (Optuna TPE, median pruning) over the recipe's `search:` space, or a default one for
    its method; each trial a run folder in <output_dir>/trials, search.jsonl, best_recipe.yaml. Rerun the same
    command to continue a killed search, or with a larger --trials to extend it.

    Example: mha-ft search --recipe quickstart --trials 6 output_dir=runs/qs-search
    """
    from rich.table import Table

    from hf_mha.recipe import load_recipe
    from hf_mha.search import BEST_RECIPE, RESULTS, best_row, plan_search, run_search

    plan = plan_search(load_recipe(recipe, overrides), trials, overwrite)
    rows = run_search(plan, overwrite, console=_main_process_console())
    keys = list(dict.fromkeys(key for row in rows for key in row["values"]))
    best = best_row(rows)
    metric = next((row["metric"] for row in rows if row["metric"]), "metric")
    table = Table("trial", "state", *(key.split(".")[-1] for key in keys), metric, "seconds", title=f"Search · {plan.out}")
    for row in rows:
        is_best = best is not None and row["trial"] == best["trial"]
        table.add_row(f"{row['trial']}{' *' if is_best else ''}", row["state"],
                      *(_cell(row["values"].get(key)) for key in keys), _cell(row["value"]), _cell(row["seconds"]))
    console.print(table)
    console.print(("* best trial. " if best else "") + f"Wrote {plan.out / RESULTS}" + (f" and {plan.out / BEST_RECIPE} (train it: mha-ft train --recipe "
                                                   f"{plan.out / BEST_RECIPE})" if best else ""))


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def cv(
    recipe: str = RecipeOption,
    folds: int = typer.Option(5, "--folds", "-k", help="Number of folds of the training data."),
    overrides: Optional[list[str]] = OverridesArgument,
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the cross-validation in output_dir over."),
) -> None:
    """K-fold cross-validation on the training data (stratified by label, grouped by data.validation_group): one
    run per fold in <output_dir>/fold-I, every score's mean ± std in cv.json. Rerun to continue a killed cv.

    Example: mha-ft cv --recipe quickstart --folds 5 output_dir=runs/qs-cv
    """
    from rich.table import Table

    from hf_mha.cv import RESULTS, plan_cv, run_cv
    from hf_mha.recipe import load_recipe

    plan = plan_cv(load_recipe(recipe, overrides), folds, overwrite)
    summary = run_cv(plan, overwrite, console=_main_process_console())
    table = Table("metric", *(f"fold {row['fold']}" for row in summary["folds"]), "mean ± std",
                  title=f"Cross-validation · {len(summary['folds'])} folds · {plan.out}")
    for key, mean in summary["mean"].items():
        table.add_row(key, *(f"{row['metrics'][key]:.4f}" for row in summary["folds"]),
                      f"[bold]{mean:.4f} ± {summary['std'][key]:.4f}[/]")
    console.print(table)
    console.print(f"Wrote {plan.out / RESULTS}")


@app.command()
def validate(
    recipe: str = RecipeOption,
    overrides: Optional[list[str]] = OverridesArgument,
    overwrite: bool = OverwriteOption,
    resume: Optional[bool] = ResumeOption,
) -> None:
    """Run every check `train` runs before its first step, and write nothing: recipe keys and types, output_dir,
    files, columns, labels, tokenizer, max_length, the model with its tuning, disk space.

    Example: mha-ft validate --recipe recipes/sst2-full.yaml data.files.train=train.tsv
    """
    from hf_mha.recipe import load_recipe
    from hf_mha.training import validate as validate_recipe

    summary = validate_recipe(load_recipe(recipe, overrides), overwrite=overwrite, resume=resume)
    for key, value in summary.items():
        console.print(f"[bold]{key}[/]: {escape(str(value))}")
    console.print("[green]Recipe is valid.[/]")


@app.command()
def env() -> None:
    """Print versions, devices and which attention backends and launch configs work here.

    Example: mha-ft env
    """
    from hf_mha.attention.mha import backend_status
    from hf_mha.env import environment, launch_config_status, launch_configs_dir

    for key, value in environment().items():
        console.print(f"[bold]{key}[/]: {value}")

    console.print("[bold]attention backends[/] (model.backend):")
    for name, what in backend_status().items():
        console.print(f"  {name}: {what}")
    console.print(f"[bold]launch configs[/] ({launch_configs_dir()}):")
    for name, (runs, why) in launch_config_status().items():
        console.print(f"  {'[green]runs here[/]' if runs else '[yellow]not here[/] '}  {name}: {why}")


@app.command()
def export(
    run: str = typer.Option(..., "--run", help="A finished run folder."),
    out: str = typer.Option(..., "--out", "-o", help="Folder to write; must not exist yet, or be empty."),
    output_format: str = typer.Option(
        "transformers", "--format", help="transformers (a plain model folder) or onnx (model.onnx for onnxruntime)."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize",
        help="int8: also model.int8.onnx, int8 weights (onnxruntime dynamic quantization); needs --format onnx."),
    push_to_hub: Optional[str] = typer.Option(
        None, "--push-to-hub", metavar="REPO",
        help="Upload the export to this Hugging Face model repository (user/name) with your token; needs the internet."),
) -> None:
    """Write a run as a plain transformers model folder: adapters merged where the method allows, stock
    attention, tokenizer, the run's recipe.yaml. Prefix/prompt tuning and bottleneck adapters cannot merge: the
    folder then holds base model + adapter, with a README.txt on how to load them.

    --format onnx writes model.onnx instead of the weights (merged methods only) and checks it against torch on
    the run's validation examples: largest logit difference, and with --quantize int8 the metric change and the
    speed-up. `mha-ft predict --model OUT` and `eval --model OUT` run the folder.

    Every export holds a README.md model card (the run's metrics in its metadata), so an upload shows a proper page.

    Example: mha-ft export --run runs/sst2-lora --out models/sst2-lora-onnx --format onnx --quantize int8
    """
    from hf_mha.export import export_run
    from hf_mha.model_card import check_hub_token, push_to_hub as upload

    if push_to_hub is not None:
        check_hub_token(push_to_hub)  # before the export: a missing token is known now
    exported = export_run(run, out, output_format, quantize)
    console.print(f"{exported.summary}\nWrote {exported.out} (largest output difference from the run's model "
                  f"on a probe batch: {exported.max_abs_diff:.1e})")
    if exported.onnx is not None:
        style = "" if exported.onnx.within_tolerance else "[bold red]"
        lines = [escape(line) for line in exported.onnx.lines()]
        console.print(f"{style}{lines[0]}", *lines[1:], sep="\n")
    if push_to_hub is not None:
        console.print(f"Uploaded to {upload(exported.out, push_to_hub)}")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Tiny model, few repeats: a smoke run in under a minute."),
    size: Optional[str] = typer.Option(
        None, "--size", help="tiny | mini (MiniLM-L6 shape; CPU default) | base (GPU default) | large."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    section: Optional[list[str]] = typer.Option(
        None, "--section", help="attention | train_step | profile; repeatable (default: attention, train_step)."),
    profile: bool = typer.Option(
        False, "--profile", help="Where a training step's time goes (torch.profiler over Trainer.train): plain "
        "Trainer against mha-ft's defaults, MiniLM and bert-base shapes (or --size), SST-2 and CoNLL lengths."),
    profile_steps: Optional[int] = typer.Option(
        None, "--profile-steps", help="Timed steps, then as many profiled, per profile case (default 10)."),
    backend: Optional[list[str]] = typer.Option(
        None, "--backend", help="Our backend(s) in the attention section; repeatable (default: all that run here)."),
    seq_len: Optional[list[int]] = typer.Option(
        None, "--seq-len", help="Padded width(s) in the attention section; repeatable (default 64 128 256)."),
    pad: Optional[list[float]] = typer.Option(
        None, "--pad", help="Padding ratio(s) in the attention section; repeatable (default 0 0.33 0.66)."),
    attention_batch: Optional[int] = typer.Option(
        None, "--attention-batch", help="Batch size in the attention section (default 8)."),
    train_batch: Optional[int] = typer.Option(None, "--train-batch", help="Batch size of the train step (default 32)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed repeats per attention cell (default 5)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Timed train steps per model (default 20)."),
    lengths_from: Optional[str] = typer.Option(
        None, "--lengths-from", metavar="FILE",
        help="Train-step batch lengths: texts sampled from this csv/tsv/json/jsonl/parquet file (e.g. SST-2's "
             "train.tsv) and tokenized (default: a built-in fit of SST-2's lengths)."),
    lengths: Optional[str] = typer.Option(
        None, "--lengths", help="Train-step lengths without --lengths-from: sst2 (default) or conll, built-in fits."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="The text column of --lengths-from (default: sentence, as in SST-2)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed rounds before timing (default 2)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: torch's setting)."),
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Also write the header and records as JSON here."),
) -> None:
    """Measure our attention against stock transformers (eager, sdpa) in one process: encoder layers forward and
    forward+backward over lengths and padding ratios, and a training step on SST-2-like lengths (the real ones
    with --lengths-from); prints real tokens/s, step time, peak memory (CUDA), MFU (known GPUs) and the ratio to
    stock sdpa. On a shared CPU machine, set OMP_WAIT_POLICY=PASSIVE in the environment for steadier numbers.

    Example: mha-ft bench --size mini --section train_step --lengths-from data/sst2/train.tsv --json bench.json
    (and mha-ft bench --profile for the profile table of docs/benchmarks.md)
    """
    from hf_mha.bench import print_report, resolve_settings, run_bench
    from hf_mha.fsutil import write_json

    if profile:
        section = [*(section or []), "profile"]
    settings = resolve_settings(
        quick=quick, device=device, size=size, sections=section, backends=backend, seq_lens=seq_len, pad_ratios=pad,
        profile_sizes=[size] if size and profile else None, profile_steps=profile_steps,
        attention_batch=attention_batch, train_batch=train_batch, repeats=repeats, train_steps=train_steps,
        warmup=warmup, threads=threads, lengths_from=lengths_from, text_column=text_column, lengths_fit=lengths,
    )
    with console.status("benchmarking") as status:
        report = run_bench(settings, progress=lambda message: status.update(message))
    print_report(report, console)
    if json_path is not None:
        write_json(json_path, report)
        console.print(f"Wrote {json_path}")


@app.command()
def heads(
    run: str = typer.Option(..., "--run", help="A finished run folder; the PNG and JSON files are written into it."),
    text: Optional[str] = typer.Option(None, "--text", help="Draw every layer's and head's attention on this text."),
    importance: bool = typer.Option(False, "--importance", help="Score head importance (Michel et al. 2019)."),
    split: str = typer.Option("validation", "--split", help="Labelled split of the recipe's data to score heads on."),
    file: Optional[str] = typer.Option(None, "--file", help="Score heads on a labelled file instead of a split."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Score on the first N examples only."),
    prune: Optional[float] = typer.Option(
        None, "--prune", help="Remove this fraction of the heads, least important first (needs --out)."
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="New run folder for the pruned copy."),
) -> None:
    """Inspect and prune attention heads: attention maps (attention_maps.png), head importance
    (head_importance.png, head_importance.json) and a pruned copy of the run that `eval` and `train` take.

    Example: mha-ft heads --run runs/sst2 --text "a gripping film" --prune 0.5 --out runs/sst2-pruned
    """
    from hf_mha.heads import heads_command

    if prune is not None and not out:
        raise UserError("--prune needs --out DIR: the pruned copy is written to a new run folder")
    if out and prune is None:
        raise UserError("--out is where --prune writes the pruned run; add --prune FRACTION (e.g. --prune 0.5)")
    if prune is not None and not 0 < prune < 1:
        raise UserError(f"--prune must be a fraction of the heads in (0, 1), e.g. 0.5; got {prune}")
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be 1 or more, got {max_samples}")
    if text is None and not importance and prune is None:
        raise UserError("heads: nothing to do; add --text \"...\" (attention maps), --importance, or --prune F --out DIR")
    heads_command(run, text, importance, split, file, max_samples, prune, out, console=console)


class WarningLines(logging.Handler):
    """`hf_mha` warnings (`hf_mha.console.warn`) as one `warning: ...` line each on stderr, main process only."""

    def emit(self, record: logging.LogRecord) -> None:
        if _main_process_console() is not None:
            err_console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    logger = logging.getLogger("hf_mha")
    if not any(isinstance(h, WarningLines) for h in logger.handlers):
        logger.addHandler(WarningLines())
        logger.propagate = False
    try:
        app(args=argv, prog_name="mha-ft")
    except UserError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)  # messages hold [lists]: not markup
        sys.exit(2)
    except RunStopped as exc:
        err_console.print(f"[red]stopped:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
