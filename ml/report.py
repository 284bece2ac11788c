"""Self-contained HTML reports: metric tables and PNG plots inlined, one file to open or attach."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border-bottom: 1px solid #ddd; padding: .25rem .75rem; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } .plots img { max-width: 34rem; }
.ok { color: #176f2c; font-weight: 600; } .bad { color: #a1260d; font-weight: 600; }
"""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table(rows: Mapping[str, object] | Sequence[Mapping[str, object]]) -> str:
    """An HTML table: a mapping becomes two columns, a list of mappings one row each."""
    if isinstance(rows, Mapping):
        body = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows.items())
        return f"<table>{body}</table>"
    if not rows:
        return "<p>(none)</p>"
    header = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def verdict(ok: bool, text: str) -> str:
    """A coloured one-line verdict."""
    return f'<p class="{"ok" if ok else "bad"}">{html.escape(text)}</p>'


def images(paths: Sequence[Path]) -> str:
    """PNG files inlined as data URIs, side by side."""
    tags = []
    for path in paths:
        data = base64.b64encode(path.read_bytes()).decode()
        tags.append(f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')
    return f'<div class="plots">{"".join(tags)}</div>'


def write_report(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write one HTML page of titled sections (each section's body is HTML); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<h2>{html.escape(heading)}</h2>{body}" for heading, body in sections]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + "".join(parts)
        + "</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
