"""The HTML of the `ddmkit demo` page: tables, figures, two-column grids, line plots (no JavaScript)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

MARK = "Made by <code>ddmkit demo</code>"  # how `ddmkit demo` recognises a folder it wrote earlier

STYLE = """body{font-family:sans-serif;max-width:1240px;margin:auto;padding:0 12px}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.cols,.cols3{display:grid;grid-template-columns:1fr 1fr;gap:14px;align-items:start}
.cols3{grid-template-columns:1fr 1fr 1fr}
figure{margin:0}figure img{width:100%;image-rendering:pixelated}figcaption{font-size:90%;color:#333}
section{border-top:2px solid #ddd;margin-top:1.5em}.intro{color:#222}.note{font-size:90%;color:#555}"""


def esc(text: object) -> str:
    return html.escape(str(text))


def cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return esc(v)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(src: str, caption: str, width: str | None = None) -> str:
    style = f" style='width:{width}'" if width else ""
    return f"<figure><img src='{esc(src)}'{style}><figcaption>{caption}</figcaption></figure>"


def columns(items: Sequence[str], cls: str = "cols") -> str:
    """Items in a CSS grid of two columns ("cols3": three), row by row (two columns: 2k left, 2k + 1 right)."""
    return f"<div class='{cls}'>" + "".join(f"<div>{i}</div>" for i in items) + "</div>"


def section(number: int, title: str, intro: str, body: str) -> str:
    return f"<section><h2>{number}. {esc(title)}</h2><p class='intro'>{intro}</p>{body}</section>"


def page(header: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ddmkit demo</title><style>{STYLE}</style>"
            f"</head><body><h1>ddmkit demo</h1><p>{MARK} {header}</p>{body}</body></html>")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path: Path, curves: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str,
              floor: tuple[float, str] | None = None, logy: bool = False) -> None:
    """One line per curve (points sorted by x); `floor` = (value, label): a dashed horizontal line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        if pts:
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    if floor is not None:
        ax.axhline(floor[0], color="grey", ls="--", label=floor[1])
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
