"""Run reports: ``report.md`` and a self-contained ``report.html`` (PNG plots embedded) beside a
job's outputs, so a run can be read without the console that produced it.

A report is a title, sections of Markdown (tables, text) and matplotlib figures; every job builds
one from what it already wrote (config, dataset summary, plan, metrics, per-epoch history).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display anywhere a job runs
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from distrec.storage import filesystem, join, write_text  # noqa: E402

__all__ = ["Report", "metrics_table", "history_figure", "bar_figure", "barh_figure", "line_figure"]


@dataclass
class Report:
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, markdown)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG bytes)

    def add(self, heading: str, markdown: str) -> None:
        self.sections.append((heading, markdown))

    def add_figure(self, name: str, fig) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append((name, buf.getvalue()))

    def write(self, output_dir: str) -> str:
        """Write the PNGs, report.md and report.html into ``output_dir``; returns the HTML's URI."""
        fs, root = filesystem(output_dir)
        fs.makedirs(root, exist_ok=True)
        for name, png in self.figures:
            fs.pipe_file(f"{root}/{name}", png)
        write_text(join(output_dir, "report.md"), self.markdown())
        write_text(join(output_dir, "report.html"), self.html())
        return join(output_dir, "report.html")

    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        for heading, body in self.sections:
            parts.append(f"## {heading}\n\n{body.strip()}\n")
        if self.figures:
            parts.append("## Plots\n\n" + "\n\n".join(f"![{n}]({n})" for n, _ in self.figures) + "\n")
        return "\n".join(parts)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for heading, text in self.sections:
            body.append(f"<h2>{html.escape(heading)}</h2>{_markdown_to_html(text)}")
        if self.figures:
            body.append("<h2>Plots</h2>")
            for name, png in self.figures:
                data = base64.b64encode(png).decode()
                caption = html.escape(name)
                body.append(
                    f'<figure><img alt="{caption}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}"
            "pre{background:#f6f6f6;padding:.5rem;overflow:auto}img{max-width:100%}"
        )
        head = f"<meta charset='utf-8'><title>{html.escape(self.title)}</title><style>{style}</style>"
        return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"


def _markdown_to_html(text: str) -> str:
    """The small Markdown subset reports use: pipe tables, ``` blocks, and paragraphs."""
    out, lines, i = [], text.strip().splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre>{html.escape(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
        elif line.startswith("|"):
            j = i
            rows = []
            while j < len(lines) and lines[j].startswith("|"):
                if not re.fullmatch(r"\|[\s:|-]+\|", lines[j]):
                    rows.append([c.strip() for c in lines[j].strip("|").split("|")])
                j += 1
            head, *rest = rows
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
            out.append(f"<table><tr>{cells}</tr>{body}</table>")
            i = j
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
            i += 1
        else:
            i += 1
    return "".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metrics_table(metrics: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """A two-column Markdown table of scalar metrics."""
    rows = [(k, v) for k, v in metrics.items() if (keys is None or k in keys) and isinstance(v, (int, float, str, type(None)))]
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows)


def history_figure(history: list[dict[str, Any]], metrics: Sequence[str], title: str):
    """Per-epoch curves (one panel per metric) from a run's history.json."""
    present = [m for m in metrics if any(m in h for h in history)]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(4.2 * max(len(present), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], present):
        xs = [h["epoch"] for h in history if name in h]
        ax.plot(xs, [h[name] for h in history if name in h], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title, y=1.04)
    return fig


def bar_figure(labels: Sequence[str], values: Sequence[float], *, ylabel: str, title: str):
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(labels) + 2), 3.4))
    ax.bar(labels, values, color="#4c72b0")
    for x, v in enumerate(values):
        ax.annotate(f"{v:.3g}", (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def barh_figure(labels: Sequence[str], values: Sequence[float], *, xlabel: str, title: str):
    """Horizontal bars, the first label on top (for long labels such as titles)."""
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(labels) + 1.2))
    ys = range(len(labels))
    ax.barh(ys, values, color="#4c72b0")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    for y, v in zip(ys, values):
        ax.annotate(f"{v:.3f}", (v, y), xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig


def line_figure(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    *,
    xlabel: str,
    title: str,
    references: Mapping[str, float | Mapping[str, float]] | None = None,
    log2_x: bool = False,
):
    """One panel per entry of ``panels`` (panel title → {line label → (xs, ys)}); ``references``
    (label → y, or label → {panel title → y}) are drawn as dashed horizontal lines in every panel."""
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o", ms=3, label=label)
        for label, y in (references or {}).items():
            ax.axhline(y[name] if isinstance(y, Mapping) else y, ls="--", color="grey", label=label)
        if log2_x:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ScalarFormatter())  # 4, 8, 16 rather than 2², 2³, 2⁴
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if len(lines) > 1 or references:
            ax.legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    return fig
