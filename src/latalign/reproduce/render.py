"""The report's blocks and their two renderings (Markdown, self-contained HTML), and the
number formats every table and claim uses.

A block is ``("h", level, text)``, ``("p", text)``, ``("table", headers, rows)``,
``("img", file name, caption)`` or ``("code", text)``; the report is built once as blocks
and rendered twice, so the Markdown and the HTML say the same thing. The HTML embeds the
PNGs as base64.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

Block = tuple[Any, ...]


def num(x: Any, digits: int = 3) -> str:
    """A number for a table: ``n/a`` for None, ``inf``, scientific below ``10^-digits``."""
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        if x != 0 and abs(x) < 10 ** (-digits):
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def pct(x: float | None, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage (``n/a`` for None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def tokens(n: float | None) -> str:
    """``1.23M`` / ``190k`` target tokens."""
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "code":
            out.append("```\n" + blk[1] + "\n```")
        elif kind == "table":
            headers, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "---|" * len(headers)]  # fmt: skip
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1]})\n\n*{blk[2]}*")
    return "\n\n".join(out) + "\n"


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    s = html.escape(text)
    parts = s.split("**")
    s = "".join(f"<b>{p}</b>" if k % 2 else p for k, p in enumerate(parts))
    parts = s.split("`")
    return "".join(f"<code>{p}</code>" if k % 2 else p for k, p in enumerate(parts))


def _html_row(cells: Any, tag: str) -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def render_html(blocks: list[Block], out: Path) -> str:
    """The HTML page; images are read from ``out`` and embedded."""
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            body.append(f"<h{blk[1]}>{html.escape(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(blk[1])}</pre>")
        elif kind == "table":
            rows = "".join(_html_row(r, "td") for r in blk[2])
            body.append(f"<table><thead>{_html_row(blk[1], 'th')}</thead><tbody>{rows}</tbody>"
                        "</table>")  # fmt: skip
        elif kind == "img":
            data = base64.b64encode((out / blk[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(blk[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(blk[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;"
        "padding:3px 6px;vertical-align:top}img{max-width:100%}pre{background:#f4f4f4;"
        "padding:0.5em;white-space:pre-wrap}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>latalign reproduce</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
