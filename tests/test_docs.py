"""The README is the front page and docs/ the details: every relative link between them resolves (file and
#anchor), every page of docs/ is reachable from the README, and the README stays one screenful of a front page."""
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower-cased, every character that is not a letter,
    digit, mark, space, hyphen or underscore removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    keep = [c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM"]
    return "".join(keep).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown page defines: its headings' slugs (repeats numbered -1, -2, ... as GitHub
    does) and explicit <a id=...> / <a name=...>."""
    found, seen = set(), {}
    for _, line in _prose_lines(text):
        found.update(_HTML_ID.findall(line))
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str):
    """(line number, target) of every Markdown link and image in the prose."""
    for number, line in _prose_lines(text):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            yield number, target


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """One line per relative link of `page` whose file or #anchor does not exist."""
    text = page.read_text() if text is None else text
    problems = []
    for number, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: ({target})"
        if not dest.exists():
            problems.append(f"{where} no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(text if not path else dest.read_text()):
            problems.append(f"{where} no heading or anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def test_the_checker_finds_a_broken_file_and_a_broken_anchor():
    text = ("# Top `code` / here: (x)\n\n[ok](#top-code--here-x) [bad](#nowhere) [gone](docs/nothing.md)\n"
            "[docs](docs/architecture.md#the-layers-bottom-up) [bad2](docs/architecture.md#nope)\n"
            "```\n[in code](missing.md)\n```\n`[span](missing.md)` [web](https://example.org/x)\n")
    problems = broken_links(README, text)
    assert len(problems) == 3, problems
    assert "#nowhere" in problems[0] and "docs/nothing.md) no such file" in problems[1]
    assert "#nope" in problems[2]


def test_slugs_are_githubs():
    assert slug("`fewshot`: closed-form few-shot probes (paper Table 3)") == \
        "fewshot-closed-form-few-shot-probes-paper-table-3"
    assert slug("`imagenet_finetune`: full fine-tuning, val / ReaL / v2 (paper Table 1)") == \
        "imagenet_finetune-full-fine-tuning-val--real--v2-paper-table-1"
    assert slug("Result records (schema version 1)") == "result-records-schema-version-1"
    assert anchors("# A\n## A\n### A\n") == {"a", "a-1", "a-2"}


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README.read_text())}
    assert [str(p.relative_to(ROOT)) for p in PAGES if p.resolve() not in linked] == []


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details into docs/"
