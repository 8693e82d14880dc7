"""A study's report as a list of blocks, rendered twice: report.md and a self-contained report.html.

The HTML embeds every plot as a base64 data URI and uses no script, font or style sheet from anywhere else, so
it opens from disk in any browser with no network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims import Result

Block = tuple[str, Any]  # ("h2"|"h3"|"p", text) | ("table", (header, rows)) | ("img", (file under plots/, caption))


@dataclass
class Section:
    """One part of a report (a claim's section, the settings, the cost); ``plots`` are file names under plots/."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, s: str) -> Section:
        self.blocks.append(("p", s))
        return self

    def table(self, header: list[str], rows: list[list[Any]]) -> Section:
        self.blocks.append(("table", (header, rows)))
        return self

    def plot(self, name: str, caption: str) -> Section:
        self.blocks.append(("img", (name, caption)))
        return self


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for tables: floats to ``digits`` significant places, None as —."""
    if x is None:
        return "—"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if x != x:
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def claims_table(results: list[Result]) -> Section:
    rows = []
    for r in results:
        for i, m in enumerate(r.parts):
            rows.append(
                [
                    r.claim.id if i == 0 else "",
                    r.claim.paper if i == 0 else "",
                    r.claim.wording if i == 0 else "",
                    r.claim.rule if i == 0 else "",
                    m.label or "—",
                    fmt(m.value),
                    f"[{fmt(m.low)}, {fmt(m.high)}]",
                    f"{m.count} {m.unit}",
                    m.verdict,
                    r.verdict if i == 0 else "",
                ]
            )
    header = ["claim", "paper", "wording", "rule", "part", "value", "95 % CI", "count", "part verdict", "verdict"]
    return Section("Claims").table(header, rows)


def claims_text(results: list[Result]) -> str:
    """The claims table as plain text for a terminal: one line per claim, then its parts."""
    lines = []
    for r in results:
        lines.append(f"{r.claim.id:4s} {r.verdict.upper():15s} {r.claim.wording}  [rule: {r.claim.rule}]")
        for m in r.parts:
            lines.append(
                f"       {m.label or '—'}: {fmt(m.value)} [{fmt(m.low)}, {fmt(m.high)}] "
                f"({m.count} {m.unit}) {m.verdict}"
            )
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_md(title: str, intro: str, sections: list[Section]) -> str:
    out = [f"# {title}", "", intro, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for kind, body in s.blocks:
            if kind == "p":
                out += [body, ""]
            elif kind == "table":
                out += [_md_table(*body), ""]
            elif kind == "img":
                out += [f"![{body[1]}](plots/{body[0]})", "", f"*{body[1]}*", ""]
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #bbb;padding:3px 6px}
th{background:#eee}img{max-width:100%}figcaption{font-style:italic;color:#555}
.reproduced{background:#d8f0d8}.not-reproduced{background:#f6d6d6}.inconclusive{background:#f3efcf}"""


def render_html(title: str, intro: str, sections: list[Section], plots_dir: Path) -> str:
    esc = html.escape
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
        f"</head><body><h1>{esc(title)}</h1><p>{esc(intro)}</p>"
    ]
    for s in sections:
        out.append(f"<h2>{esc(s.title)}</h2>")
        for kind, body in s.blocks:
            if kind == "p":
                out.append(f"<p>{esc(body)}</p>")
            elif kind == "table":
                header, rows = body
                out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
                for row in rows:
                    cells = []
                    for v in row:
                        text = fmt(v)
                        css = text.replace(" ", "-") if text in ("reproduced", "not reproduced", "inconclusive") else ""
                        cells.append(f"<td class='{css}'>{esc(text)}</td>" if css else f"<td>{esc(text)}</td>")
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</table>")
            elif kind == "img":
                data = base64.b64encode((plots_dir / body[0]).read_bytes()).decode("ascii")
                out.append(
                    f"<figure><img alt='{esc(body[1])}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{esc(body[1])}</figcaption></figure>"
                )
    out.append("</body></html>")
    return "\n".join(out)
