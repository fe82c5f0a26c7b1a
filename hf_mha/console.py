"""What commands print: a line, the results table with the reports, or a warning. `console` is a rich Console,
or None in processes that must stay quiet (every process but the main one under `accelerate launch`)."""

from __future__ import annotations

import logging
from pathlib import Path


def say(console, text: str) -> None:
    if console is not None:
        console.print(text, soft_wrap=True)


def print_results(console, metrics: dict, reports: dict[str, str], out: Path) -> None:
    """Each split's report, then one table of the metrics."""
    if console is None:
        return
    from rich.table import Table

    table = Table(title=f"Results · {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float) and not key.endswith(("_runtime", "_steps_per_second")):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(key, f"{value:,}")
    for prefix, report in reports.items():
        console.print(f"[bold]{prefix} report[/]\n{report}")
    console.print(table)


def warn(text: str) -> None:
    """Something looks wrong but need not stop the run: one line through the `hf_mha` logger, which the CLI prints
    as `warning: ...` on stderr (from the main process only)."""
    logging.getLogger("hf_mha").warning(text)
