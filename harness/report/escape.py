"""Reports are inert: every value a record gives a report (checkpoint, task, dataset and metric names, units,
notes, settings, `_kind`) passes through the escaping of its output format, here, so that no record can add
code or structure to a report, whatever its text.

- `visible`: control characters, line and paragraph separators, bidirectional-text controls and lone
  surrogates written as Python-style escapes (`\\n`, `\\x1b`, `\\u202e`): a value stays on one line, cannot
  drive a terminal or reorder the text around it, and can be written as UTF-8. Every format but CSV starts
  with it (the HTML page applies it to every value it prints, before Jinja2's autoescape: `harness.report.html`;
  plots draw it as plain text, never math text).
- `md_text`, `md_cell`, `md_line`, `md_item`: Markdown. No HTML, no link, no table column and no block (heading, list,
  quote, fence) can come from a value.
- `latex_text`: LaTeX's special characters, and what `\\\\` would take for its optional argument.
- `csv_text`, `csv_line`: a text cell that a spreadsheet would run as a formula is prefixed with a single
  quote (OWASP, "CSV Injection"); the csv module quotes a cell holding a separator, a quote or a line break.
  Numbers are written by the renderer, not through `csv_text`.
"""

from __future__ import annotations

import csv
import io
import re
import textwrap
from collections.abc import Sequence
from typing import Any

# C0 and C1 controls (newlines and tabs too), the line and paragraph separators, lone surrogates (not
# encodable as UTF-8), and the controls that reorder text (ALM, LRM, RLM, LRE..RLO, LRI..PDI).
_HIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def visible(value: Any) -> str:
    """`value` as one line of printable text: hidden and control characters as escapes (`\\n`, `\\x1b`)."""
    return _HIDDEN.sub(lambda m: _escaped(m.group()), str(value))


# ------------------------------------------------------------------------------------ Markdown
# A backslash before ASCII punctuation would escape it (CommonMark): it is escaped itself.
_MD_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~])")
# `<` would open HTML or an autolink, `](` an inline link or image.
_MD_INLINE = re.compile(r"<|\](?=\()")
# What would start a block at the beginning of a line inside a paragraph (CommonMark, GFM tables).
_MD_BLOCK = re.compile(r"""^(?:
    \#{1,6}(?=\s|$)               # ATX heading
  | [-+*](?=\s|$)                 # bullet list item
  | [>|]                          # block quote; table row
  | `{3,} | ~{3,}                 # code fence
  | [-=_*:](?=[-=_*:|\s]*$)        # thematic break, setext underline, table delimiter row
)""", re.VERBOSE)
_MD_ORDERED = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")


def md_text(value: Any) -> str:
    """A value inside Markdown text (a heading, a list item): one line, no HTML, no link."""
    s = _MD_BACKSLASH.sub(r"\\\\", visible(value))
    return _MD_INLINE.sub(lambda m: "\\" + m.group(), s)


def md_cell(value: Any) -> str:
    """A value in a Markdown table cell: `md_text`, and neither a column separator nor a code span."""
    return re.sub(r"[|`]", lambda m: "\\" + m.group(), md_text(value))


def md_line(text: str) -> str:
    """A line of Markdown text (already `md_text`) that starts no block where it starts a line: a list
    item's text, each continuation line of a wrapped one."""
    rest = text.lstrip(" ")
    lead = text[:len(text) - len(rest)]
    m = _MD_ORDERED.match(rest)
    if m:
        return f"{lead}{m.group(1)}\\{rest[len(m.group(1)):]}"
    return f"{lead}\\{rest}" if _MD_BLOCK.match(rest) else text


def md_item(text: str, width: int | None = None) -> str:
    """`text` (ours, holding values from records) as one Markdown list item, wrapped to `width` characters
    when given; no line of it starts a block (`md_line`)."""
    text = md_text(text)
    lines = textwrap.wrap(text, width, initial_indent="- ", subsequent_indent="  ", break_long_words=False,
                          break_on_hyphens=False) if width else [f"- {text}"]
    return "\n".join(ln[:2] + md_line(ln[2:]) for ln in lines or ["- "])


# ------------------------------------------------------------------------------------ LaTeX
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          # OT1 prints these as other glyphs (¡ ¿ —)
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
          # a row's first cell follows the previous row's `\\`, which would take `[...]` or `*` as its own
          "[": "{[}", "]": "{]}", "*": "{*}"}


def latex_text(value: Any) -> str:
    """A value in LaTeX text mode: `visible`, its special characters escaped."""
    return "".join(_LATEX.get(ch, ch) for ch in visible(value))


# ------------------------------------------------------------------------------------ CSV
# Cells a spreadsheet reads as a formula (OWASP "CSV Injection"; OWASP ASVS 5.0 requirement 1.2.10 adds NUL).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_text(value: Any) -> str:
    """A text cell of a CSV file: itself (the csv module quotes it), prefixed with `'` when it would start a
    formula; lone surrogates, which UTF-8 cannot hold, as escapes."""
    s = re.sub(r"[\ud800-\udfff]", lambda m: _escaped(m.group()), str(value))
    return "'" + s if s.startswith(FORMULA_STARTS) else s


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line, ending in "\n", of cells already made (`csv_text`, numbers): the csv module quotes a cell
    holding a comma, a quote, "\r" or "\n" (it quotes the characters of its line terminator: given "\r\n",
    which this line does not end in)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()[:-2] + "\n"
