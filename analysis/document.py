"""A small document model rendered twice: Markdown (`report.md`) and one
self-contained HTML file (`report.html`, figures embedded as data URIs).

Writing the report once as blocks keeps the two files saying the same thing.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Para:
    text: str


@dataclass
class Warning_:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    df: pd.DataFrame  # cells already formatted as text
    note: str = ""


@dataclass
class Figure_:
    number: int
    title: str
    file: str | None
    caption: str
    skipped: str | None = None


@dataclass
class Details:
    summary: str
    blocks: list = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    boxed: bool = False


# ------------------------------------------------------------------ Markdown
def _md_cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _md_blocks(blocks: list, level: int = 2) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Warning_):
            out.append(f"> **Warning:** {b.text}")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Table):
            out.append(_md_table(b.df) if len(b.df) else "(no rows)")
            if b.note:
                out.append(f"_{b.note}_")
        elif isinstance(b, Figure_):
            if b.file:
                out.append(f"### Figure {b.number}. {b.title}\n\n![Figure {b.number}]({b.file})\n\n"
                           f"_Figure {b.number}. {b.caption}_")
            else:
                out.append(f"### Figure {b.number}. {b.title}\n\n_Not drawn: {b.skipped}._")
        elif isinstance(b, Details):
            out.append(f"**{b.summary}**")
            out.extend(_md_blocks(b.blocks, level + 1))
    return out


def to_markdown(title: str, intro: list, sections: list[Section]) -> str:
    parts = [f"# {title}", *_md_blocks(intro)]
    for s in sections:
        parts.append(f"## {s.title}")
        parts.extend(_md_blocks(s.blocks))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------- HTML
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
.box { border: 1px solid #bbb; border-radius: 6px; padding: .2em 1.2em 1em; background: #fbfbf8; }
.box h2 { margin-top: .5em; }
.warning { border-left: 5px solid #c0392b; background: #fdecea; padding: .5em 1em; font-weight: 600; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; max-width: 70em; }
.note { font-size: .85em; color: #555; } .skipped { color: #666; font-style: italic; }
.verdict-supported { color: #1e7b34; font-weight: 600; } .verdict-not { color: #a33; font-weight: 600; }
.verdict-inconclusive { color: #8a6d00; font-weight: 600; }
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_blocks(blocks: list, fig_dir: Path) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Para):
            out.append(f"<p>{_esc(b.text)}</p>")
        elif isinstance(b, Warning_):
            out.append(f'<p class="warning">Warning: {_esc(b.text)}</p>')
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_verdict_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append(_html_table(b.df) if len(b.df) else "<p>(no rows)</p>")
            if b.note:
                out.append(f'<p class="note">{_esc(b.note)}</p>')
        elif isinstance(b, Figure_):
            head = f"<h3>Figure {b.number}. {_esc(b.title)}</h3>"
            if b.file:
                out.append(f'<figure id="figure-{b.number}">{head}<img src="{_img(fig_dir / b.file)}" '
                           f'alt="Figure {b.number}: {_esc(b.title)}"><figcaption>Figure {b.number}. '
                           f"{_esc(b.caption)}</figcaption></figure>")
            else:
                out.append(f'<div id="figure-{b.number}">{head}<p class="skipped">Not drawn: {_esc(b.skipped)}.'
                           "</p></div>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{_esc(b.summary)}</summary>{''.join(_html_blocks(b.blocks, fig_dir))}"
                       "</details>")
    return out


def _verdict_html(text: str) -> str:
    """Colour the verdict word that starts a findings line."""
    for word, cls in (("contradicted", "verdict-not"), ("supported", "verdict-supported"),
                      ("inconclusive", "verdict-inconclusive"), ("error", "verdict-not")):
        if text.lower().startswith(word):
            return f'<span class="{cls}">{_esc(text[:len(word)])}</span>{_esc(text[len(word):])}'
    return _esc(text)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def to_html(title: str, intro: list, sections: list[Section], fig_dir: Path) -> str:
    toc = "".join(f'<li><a href="#{_anchor(s.title)}">{_esc(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{_esc(title)}</h1>", *_html_blocks(intro, fig_dir), f"<nav><ul>{toc}</ul></nav>"]
    for s in sections:
        inner = f'<h2 id="{_anchor(s.title)}">{_esc(s.title)}</h2>' + "".join(_html_blocks(s.blocks, fig_dir))
        body.append(f'<section class="box">{inner}</section>' if s.boxed else f"<section>{inner}</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
