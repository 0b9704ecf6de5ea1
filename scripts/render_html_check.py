"""Open a `harness report --format html` page in headless Chromium and check that it renders.

    python scripts/render_html_check.py report.html [--screenshot out.png] [--width PX] [--min-rows N]
                                                    [--min-images N] [--expect TEXT ...] [--local-root DIR]

Chromium opens a copy of the page with a small hook added at the top of <head> (the page itself has no
script): it records every uncaught error and every resource that failed to load, and at the `load` event
writes the page's height and each image's decoded size and on-page box into an attribute of <html>.
Chromium runs twice: the DOM it built (`--dump-dom`), then a screenshot of the whole page (the window as
tall as the page, up to MAX_HEIGHT). Checked:

- no console message and no error (the page has no script, so any console message is a fault);
- every plot <img> is an inline PNG that decoded (naturalWidth > 0), and the screenshot's pixels inside
  each plot's box are not blank (the plot was painted, not just laid out);
- the screenshot as a whole is not blank; the tables have at least N body rows; no reference to
  anything outside the page (Chromium runs with networking features off, so a page needing the network
  would show it); every --expect text is in the rendered text.

`--local-root DIR` allows what a report with pages of examples has: links and PNG images given as relative
paths to files that exist under DIR (the main page's links to its pages of examples, their thumbnails and
links back); the hooked copy is then opened from the page's own folder, so those paths resolve.

Exit 0 when every check passes, 1 otherwise; the reasons are printed. Needs the `chromium` binary (Debian:
`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import dataclasses
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--enable-logging=stderr", "--v=0")
# What --enable-logging=stderr prints for a console message or an uncaught exception:
# [pid:tid:date:INFO:CONSOLE:9] "Uncaught ReferenceError: f is not defined", source: file:///x.html (9)
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")
MAX_HEIGHT = 16_000  # px: a screenshot taller than this is cut (Chromium's own limit is 16384)
HOOK = """<script>/* render_html_check.py */
(function () {
  var errors = [];
  addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t.tagName ? t.tagName.toLowerCase() + " failed to load" : String(e.message));
  }, true);
  addEventListener("load", function () {
    var imgs = Array.prototype.map.call(document.images, function (i) {
      var r = i.getBoundingClientRect();
      return {w: i.naturalWidth, h: i.naturalHeight, complete: i.complete,
              box: [r.left + scrollX, r.top + scrollY, r.width, r.height]};
    });
    var height = document.documentElement.scrollHeight;
    document.documentElement.setAttribute("data-render-check",
                                          JSON.stringify({errors: errors, imgs: imgs, height: height}));
  });
})();
</script>"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(binary: str, args: list[str], timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], check=False, capture_output=True,
                              text=True, timeout=timeout_s)


class _DomStats(html.parser.HTMLParser):
    """Counts table body rows, inline PNG images and anything that would load from elsewhere; keeps the
    text, and the hook's report from <html data-render-check>."""

    def __init__(self, local_ok=None):
        super().__init__()
        self.local_ok = local_ok or (lambda ref: False)  # whether a relative reference is an allowed local file
        self.rows = 0
        self.tables = 0
        self.png_images = 0
        self.other_images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self.hook: str | None = None
        self._in_tbody = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.hook = a.get("data-render-check")
        elif tag == "script":
            self._in_script = True
        elif tag == "table":
            self.tables += 1
        elif tag == "tbody":
            self._in_tbody += 1
        elif tag == "tr" and self._in_tbody:
            self.rows += 1
        elif tag == "img":
            src = a.get("src") or ""
            if src.startswith("data:image/png;base64,") or (src.endswith(".png") and self.local_ok(src)):
                self.png_images += 1
            else:
                self.other_images.append(src[:80])
        for key in ("src", "href"):
            v = (a.get(key) or "").strip()
            if v and not v.startswith(("data:", "#")) and not self.local_ok(v):
                self.external.append(f"<{tag} {key}={v[:80]}>")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody -= 1
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if not self._in_script:
            self.text.append(data)


def png_stats(img: np.ndarray) -> tuple[float, float]:
    """(fraction of non-background pixels, pixel std) of an RGB array; the background is the median."""
    background = np.median(img.reshape(-1, 3), axis=0)
    differs = np.abs(img - background).sum(axis=2) > 24
    return float(differs.mean()), float(img.std())


def with_hook(page: str) -> str:
    """The page with HOOK as the first thing in <head> (before anything that could fail)."""
    m = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    at = m.end() if m else 0
    return page[:at] + HOOK + page[at:]


@dataclasses.dataclass
class Rendered:
    dom: _DomStats
    hook: dict  # {"errors": [...], "imgs": [{"w", "h", "complete", "box": [x, y, w, h]}], "height"}
    console: list[str]  # console lines Chromium logged, from both runs
    screenshot: np.ndarray  # RGB, float32


def local_reference(page: Path, root: Path):
    """Whether a reference of `page` is a relative path to a file under `root`."""
    here, root = page.resolve().parent, Path(root).resolve()

    def ok(ref: str) -> bool:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:|^/|^\\\\", ref) or "?" in ref or "#" in ref:
            return False  # a scheme (http:, file:, javascript:), an absolute or network path, a query
        target = (here / ref).resolve()
        return target.is_file() and (target == root or root in target.parents)

    return ok


def render(page: Path, screenshot: Path, *, width: int = 1200, local_root: Path | None = None) -> Rendered | str:
    """DOM and whole-page screenshot of `page` (with the hook), or the reason there are none. `local_root`:
    relative links and PNG images of files under it are allowed (and load: the copy is opened beside the page)."""
    binary = find_chromium()
    if binary is None:
        return "chromium not found; install it (Debian: apt-get install -y chromium)"
    with tempfile.TemporaryDirectory(prefix="render-check-") as tmp:
        local = local_root is not None
        hooked = (page.parent / f".render-check-{page.name}") if local else Path(tmp) / page.name
        hooked.write_text(with_hook(page.read_text(encoding="utf-8")), encoding="utf-8")
        try:
            url = hooked.resolve().as_uri()
            dom = run_chromium(binary, ["--dump-dom", f"--window-size={width},1000", url])
            if dom.returncode != 0 or "<html" not in dom.stdout:
                return f"chromium --dump-dom failed (exit {dom.returncode}): {dom.stderr.strip()[-400:]}"
            stats = _DomStats(local_reference(page, local_root) if local else None)
            stats.feed(dom.stdout)
            if stats.hook is None:
                return "the page's load event never came (no render report in the DOM Chromium built)"
            height = min(max(int(json.loads(stats.hook)["height"]), 100), MAX_HEIGHT)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.unlink(missing_ok=True)
            shot = run_chromium(binary, [f"--screenshot={screenshot.resolve()}", f"--window-size={width},{height}",
                                         url])
            if not screenshot.exists():
                return f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr.strip()[-400:]}"
        finally:
            if local:
                hooked.unlink(missing_ok=True)
    console = [ln for ln in (shot.stderr + dom.stderr).splitlines() if CONSOLE_LINE.search(ln)]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.float32)
    return Rendered(stats, json.loads(stats.hook), console, pixels)


def check(page: Path, screenshot: Path, *, min_rows: int = 1, min_images: int = 1, width: int = 1200,
          expect: Sequence[str] = (), local_root: Path | None = None) -> list[str]:
    """The list of failed checks (empty = all passed)."""
    r = render(page, screenshot, width=width, local_root=local_root)
    if isinstance(r, str):
        return [r]
    return check_rendered(r, page, screenshot, min_rows=min_rows, min_images=min_images, expect=expect)


def check_rendered(r: Rendered, page: Path, screenshot: Path, *, min_rows: int = 1, min_images: int = 1,
                   expect: Sequence[str] = ()) -> list[str]:
    """The failed checks of a rendered page."""
    # Both runs log the same messages: each once.
    failures = [f"console: {msg[:300]}" for msg in dict.fromkeys(ln.split("] ", 1)[-1] for ln in r.console)]
    failures += [f"page error: {e}" for e in r.hook["errors"]]
    ink, std = png_stats(r.screenshot)
    if ink < 0.02 or std < 5.0:
        failures.append(f"screenshot {screenshot} looks blank ({ink:.1%} non-background pixels, std {std:.1f})")
    height, width = r.screenshot.shape[:2]
    painted = 0
    for i, img in enumerate(r.hook["imgs"]):
        if not (img["complete"] and img["w"] > 0 and img["h"] > 0):
            failures.append(f"image {i} did not decode (complete={img['complete']}, natural size "
                            f"{img['w']}x{img['h']})")
            continue
        x, y, w, h = (round(v) for v in img["box"])
        if w < 20 or h < 20 or x < 0 or y < 0 or x + w > width or y + h > height:
            failures.append(f"image {i} at {x},{y} ({w}x{h}) is not inside the {width}x{height} screenshot")
            continue
        box_ink, box_std = png_stats(r.screenshot[y:y + h, x:x + w])
        if box_ink < 0.02 or box_std < 10.0:
            failures.append(f"image {i} at {x},{y} ({w}x{h}) is blank in the screenshot "
                            f"({box_ink:.1%} ink, std {box_std:.1f})")
        painted += 1
    d = r.dom
    if d.tables < 1 or d.rows < min_rows:
        failures.append(f"expected >= {min_rows} table rows, the rendered DOM has {d.rows} in {d.tables} tables")
    if d.png_images < min_images or len(r.hook["imgs"]) < min_images:
        failures.append(f"expected >= {min_images} inline PNG images, found {d.png_images}")
    if d.other_images:
        failures.append(f"images not inline: {d.other_images}")
    if d.external:
        failures.append(f"external references: {d.external[:5]}")
    text = " ".join(d.text)
    failures += [f"text {t!r} is not in the rendered page" for t in expect if t not in text]
    print(f"{page}: screenshot {screenshot} {width}x{height}, {ink:.1%} non-background; DOM: {d.tables} tables, "
          f"{d.rows} rows, {d.png_images} inline PNG images ({painted} checked in the screenshot), "
          f"{len(r.console)} console messages")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--screenshot", type=Path, default=None, help="PNG to write (default: PAGE with .png)")
    p.add_argument("--min-rows", type=int, default=1)
    p.add_argument("--min-images", type=int, default=1)
    p.add_argument("--width", type=int, default=1200, help="Window width in pixels (the height is the page's).")
    p.add_argument("--expect", action="append", default=[], help="Text the rendered page must contain.")
    p.add_argument("--local-root", type=Path, default=None, help="Allow relative links and PNG images of files "
                   "under this folder (a report's pages of examples, their thumbnails, their links back).")
    args = p.parse_args(argv)
    if not args.page.is_file():
        print(f"{args.page}: no such file", file=sys.stderr)
        return 1
    shot = args.screenshot or args.page.with_suffix(".png")
    failures = check(args.page, shot, min_rows=args.min_rows, min_images=args.min_images, width=args.width,
                     expect=args.expect, local_root=args.local_root)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
