"""Writing a benchmark's results: `reports/NAME.json` (all numbers) and `reports/NAME.md` (a table)."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def machine() -> str:
    return f"{platform.machine()} with {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def write_report(
    name: str,
    title: str,
    intro: Sequence[str],
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str],
    data: dict[str, Any],
    directory: Path = REPORTS,
) -> str:
    """Write both files (into `directory`, reports/ by default) and return the markdown."""
    lines = [f"# {title}", "", *intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *notes]
    markdown = "\n".join(lines) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data, indent=2))
    (directory / f"{name}.md").write_text(markdown)
    return markdown
