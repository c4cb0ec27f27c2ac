"""Drawing and writing reports: matplotlib renderers of `raycl.analysis.figures` data, HTML and Markdown.

Renderers only draw; every number they show was computed by a data function. Figures are built on
the Agg canvas directly (no pyplot, no window, no global state). A report is a list of blocks; the
HTML embeds each image as a base64 PNG data URI and references nothing outside itself, the Markdown
links PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from raycl.analysis.figures import (
    CurvePanel,
    FitFigure,
    Heatmap,
    ParetoFigure,
    SensitivityPanel,
)
from raycl.analysis.frontier import Frontier
from raycl.analysis.scaling import FITTED_LABELS

_CMAP = "viridis"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    name: str  # file stem of the PNG beside report.md
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    """Text shown as written (a YAML file), in a fixed-width font."""

    text: str
    language: str = ""


Block = Heading | Text | Table | Image | Code


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _size_norm(sizes: np.ndarray) -> Normalize:
    """Log colour scale over the model sizes present (sizes span decades on a model ladder)."""
    finite = sizes[np.isfinite(sizes) & (sizes > 0)]
    if len(finite) == 0 or finite.min() == finite.max():
        low = finite.min() if len(finite) else 1.0
        return LogNorm(low / 2, low * 2)
    return LogNorm(finite.min(), finite.max())


def _size_colorbar(figure: Figure, axes: Axes | list[Axes], norm: Normalize) -> None:
    figure.colorbar(ScalarMappable(norm=norm, cmap=_CMAP), ax=axes, label="model size (parameters)")


def several_sizes(sizes: np.ndarray) -> bool:
    """Whether the trials span more than one model size, so that colouring by size tells them apart."""
    return len(np.unique(sizes[np.isfinite(sizes)])) > 1


def draw_pareto(data: ParetoFigure) -> Figure:
    figure = _figure(6.5, 4.8)
    ax = figure.subplots()
    norm, by_size = _size_norm(data.sizes), several_sizes(data.sizes)
    shown = data.feasible
    if by_size:
        ax.scatter(data.x[shown], data.y[shown], c=data.sizes[shown], cmap=_CMAP, norm=norm, s=36, label="trial")
    else:
        ax.scatter(data.x[shown], data.y[shown], c="tab:blue", s=36, label="trial")
    if (~shown).any():
        ax.scatter(data.x[~shown], data.y[~shown], c="tab:gray", marker="x", label="infeasible")
    front = data.front_order
    ax.plot(data.x[front], data.y[front], drawstyle="steps-post", c="tab:red", alpha=0.6)
    ax.scatter(
        data.x[front], data.y[front], facecolors="none", edgecolors="tab:red", s=110, linewidths=1.5, label="Pareto set"
    )
    for index in front:
        ax.annotate(
            data.keys[index], (data.x[index], data.y[index]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel(f"{data.x_name} ({data.directions[0]})")
    ax.set_ylabel(f"{data.y_name} ({data.directions[1]})")
    ax.legend(loc="best", fontsize=8)
    if by_size:
        _size_colorbar(figure, ax, norm)
    return figure


def draw_hypervolume(data: Frontier) -> Figure:
    figure = _figure(6.5, 3.6)
    ax = figure.subplots()
    ax.plot(np.arange(1, len(data.history) + 1), data.history, marker="o", ms=3)
    ax.set_xlabel("complete trials (completion order)")
    ax.set_ylabel("hypervolume")
    reference = ", ".join(f"{name} {value:.4g}" for name, value in zip(data.objectives, data.reference))
    ax.set_title(f"reference point: {reference}\n({data.reference_source})", fontsize=9)
    return figure


def draw_fits(panels: Sequence[FitFigure]) -> Figure:
    """One panel per law of one target: curve, 95% band, fitted points, held-out points."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _figure(4.6 * columns, 3.9 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, data in zip(axes, panels):
        curve = data.curve
        if np.isfinite(curve.low).all():
            ax.fill_between(curve.x, curve.low, curve.high, color="tab:blue", alpha=0.2, label="95% bootstrap band")
        ax.plot(curve.x, curve.prediction, c="tab:blue", label="fit")
        fitted = ~data.held_out
        ax.scatter(data.x[fitted], data.adjusted[fitted], c="k", s=14, label="fitted trials")
        if data.held_out.any():
            error = f", mean |rel. error| {data.held_out_error:.1%}"
            ax.scatter(
                data.x[data.held_out],
                data.adjusted[data.held_out],
                marker="*",
                s=90,
                c="tab:red",
                label=f"held out ({data.vary} = {data.held_out_size:.3g}{error})",
            )
            ax.axvline(data.held_out_size, c="tab:red", ls=":", lw=1)
        if curve.x.min() > 0:
            ax.set_xscale("log")
        if np.all(data.adjusted > 0) and np.all(curve.prediction > 0):
            ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())  # log axes label minor ticks on spans under a decade
        held = ", ".join(f"{name}={value:.3g}" for name, value in curve.held.items())
        ax.set_title(f"{data.law}: {data.expression}" + (f"\nat {held}" if held else ""), fontsize=8)
        ax.set_xlabel(data.vary)
        ax.set_ylabel(FITTED_LABELS.get(data.target, data.target))
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return figure


def draw_heatmaps(maps: Sequence[Heatmap]) -> Figure:
    columns = min(3, len(maps))
    rows = math.ceil(len(maps) / columns)
    cells = max(len(m.column_labels) for m in maps)
    figure = _figure(max(3.2, 1.3 * cells + 1.6) * columns, (0.9 * cells + 1.8) * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, data in zip(axes, maps):
        image = ax.imshow(data.values, cmap="magma_r", aspect="auto")
        middle = (np.nanmin(data.values) + np.nanmax(data.values)) / 2  # magma_r: dark cells hold high losses
        ax.set_xticks(range(len(data.column_labels)), data.column_labels, fontsize=7, rotation=30, ha="right")
        labels = [
            f"{label}\nbase {loss:.2f}" for label, loss in zip(data.row_labels, data.retention)
        ] or data.row_labels
        ax.set_yticks(range(len(data.row_labels)), labels, fontsize=7)
        for (i, j), value in np.ndenumerate(data.values):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > middle else "black"
            )
        ax.set_title(data.key, fontsize=9)
        figure.colorbar(image, ax=ax, label="held-out loss (nats)", shrink=0.8)
    for ax in axes[len(maps) :]:
        ax.set_visible(False)
    return figure


def draw_curves(panels: Sequence[CurvePanel]) -> Figure:
    figure = _figure(5.0 * len(panels), 3.8)
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    sizes = np.array([line.size for panel in panels for line in panel.lines])
    norm, by_size = _size_norm(sizes), several_sizes(sizes)
    cmap = colormaps[_CMAP]
    for ax, panel in zip(axes, panels):
        for line in panel.lines:
            colour = cmap(norm(line.size)) if by_size and np.isfinite(line.size) else "tab:blue"
            ax.plot(
                line.steps,
                line.values,
                color=colour,
                lw=2.2 if line.pareto else 0.8,
                alpha=1.0 if line.pareto else 0.5,
                marker="o",
                ms=3,
            )
        ax.set_xlabel("step")
        ax.set_ylabel(f"{panel.metric} (nats)")
        ax.set_title(f"{panel.metric} (thick: Pareto trials)", fontsize=9)
    if by_size:
        _size_colorbar(figure, list(axes), norm)
    return figure


def draw_sensitivity(panels: Sequence[SensitivityPanel]) -> Figure:
    """Grid: one row per objective, one column per parameter."""
    objectives = list(dict.fromkeys(p.objective for p in panels))
    parameters = list(dict.fromkeys(p.parameter for p in panels))
    figure = _figure(3.2 * len(parameters), 2.8 * len(objectives))
    axes = figure.subplots(len(objectives), len(parameters), squeeze=False)
    for data in panels:
        ax = axes[objectives.index(data.objective), parameters.index(data.parameter)]
        ax.scatter(data.x, data.y, s=12, alpha=0.7)
        if data.categories is not None:
            ax.set_xticks(range(len(data.categories)), data.categories, fontsize=7, rotation=20)
            ax.set_xlim(-0.5, len(data.categories) - 0.5)
            title = f"{len(data.x)} trials"
        elif np.isfinite(data.rank_correlation):
            title = f"Spearman ρ = {data.rank_correlation:+.2f} ({len(data.x)} trials)"
        else:
            title = f"Spearman ρ undefined ({len(data.x)} trials)"
        if data.log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on spans under a decade
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(data.parameter, fontsize=8)
        ax.set_ylabel(data.objective, fontsize=8)
    return figure


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Text):
            lines += [block.text, ""]
        elif isinstance(block, Code):
            lines += [f"```{block.language}", block.text.rstrip("\n"), "```", ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_markdown_cell(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{_markdown_cell(block.caption)}]({block.name}.png)", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f2f2f2}pre{background:#f6f6f6;padding:.5em;font-size:.8em;overflow-x:auto}
td:first-child,th:first-child{text-align:left}img{max-width:100%}figcaption{font-size:.85em;color:#555}"""


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """A self-contained page: inline style, images as data URIs, no link, script or font from elsewhere."""
    escape = html.escape
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Code):
            parts.append(f"<pre>{escape(block.text)}</pre>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{escape(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(directory: Path, title: str, blocks: Sequence[Block]) -> list[Path]:
    """report.html, report.md and one PNG per image in `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.png"):  # images of an earlier report that this one may not redraw
        stale.unlink()
    written = []
    for block in blocks:
        if isinstance(block, Image):
            path = directory / f"{block.name}.png"
            path.write_bytes(block.png)
            written.append(path)
    for name, text in (("report.md", to_markdown(title, blocks)), ("report.html", to_html(title, blocks))):
        (directory / name).write_text(text)
        written.append(directory / name)
    return written
