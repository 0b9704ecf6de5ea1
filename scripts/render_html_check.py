"""Open a `harness report --format html` page in headless Chromium and check that it renders.

    python scripts/render_html_check.py report.html [--screenshot out.png] [--min-rows N] [--min-images N]

Takes a screenshot (1200x2000) and checks it is not blank, then dumps the DOM and checks that the
tables have rows and the plots are inline PNG `<img>` tags. Chromium runs with networking features off, so
a page that needed the network would show it. Exit 0 when every check passes, 1 otherwise; the reasons are
printed. Needs the `chromium` binary (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import html.parser
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(binary: str, args: list[str], timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout_s)


class _DomStats(html.parser.HTMLParser):
    """Counts table body rows, inline PNG images and anything that would load from elsewhere."""

    def __init__(self):
        super().__init__()
        self.rows = 0
        self.tables = 0
        self.png_images = 0
        self.other_images: list[str] = []
        self.external: list[str] = []
        self._in_tbody = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "tbody":
            self._in_tbody += 1
        elif tag == "tr" and self._in_tbody:
            self.rows += 1
        elif tag == "img":
            src = a.get("src") or ""
            if src.startswith("data:image/png;base64,"):
                self.png_images += 1
            else:
                self.other_images.append(src[:80])
        for key in ("src", "href"):
            v = (a.get(key) or "").strip()
            if v and not v.startswith(("data:", "#")):
                self.external.append(f"<{tag} {key}={v[:80]}>")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody -= 1


def png_stats(path: Path) -> tuple[int, int, float, float]:
    """(width, height, fraction of non-background pixels, pixel std) of a PNG."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    background = np.median(img.reshape(-1, 3), axis=0)
    differs = np.abs(img - background).sum(axis=2) > 24
    return img.shape[1], img.shape[0], float(differs.mean()), float(img.std())


def check(page: Path, screenshot: Path, *, min_rows: int = 1, min_images: int = 1,
          window: str = "1200,2000") -> list[str]:
    """The list of failed checks (empty = all passed)."""
    binary = find_chromium()
    if binary is None:
        return ["chromium not found; install it (Debian: apt-get install -y chromium)"]
    failures = []
    url = page.resolve().as_uri()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    shot = run_chromium(binary, [f"--screenshot={screenshot.resolve()}", f"--window-size={window}", url])
    if not screenshot.exists():
        return [f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr.strip()[-400:]}"]
    w, h, ink, std = png_stats(screenshot)
    if ink < 0.02 or std < 5.0:
        failures.append(f"screenshot {screenshot} looks blank ({ink:.1%} non-background pixels, std {std:.1f})")
    dom = run_chromium(binary, ["--dump-dom", url])
    if dom.returncode != 0 or "<html" not in dom.stdout:
        return failures + [f"chromium --dump-dom failed (exit {dom.returncode}): {dom.stderr.strip()[-400:]}"]
    stats = _DomStats()
    stats.feed(dom.stdout)
    if stats.tables < 1 or stats.rows < min_rows:
        failures.append(f"expected >= {min_rows} table rows, the rendered DOM has {stats.rows} "
                        f"in {stats.tables} tables")
    if stats.png_images < min_images:
        failures.append(f"expected >= {min_images} inline PNG images, found {stats.png_images}")
    if stats.other_images:
        failures.append(f"images not inline: {stats.other_images}")
    if stats.external:
        failures.append(f"external references: {stats.external[:5]}")
    print(f"{page}: screenshot {screenshot} {w}x{h}, {ink:.1%} non-background; DOM: {stats.tables} tables, "
          f"{stats.rows} rows, {stats.png_images} inline PNG images")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--screenshot", type=Path, default=None, help="PNG to write (default: PAGE with .png)")
    p.add_argument("--min-rows", type=int, default=1)
    p.add_argument("--min-images", type=int, default=1)
    p.add_argument("--window-size", default="1200,2000")
    args = p.parse_args(argv)
    if not args.page.is_file():
        print(f"{args.page}: no such file", file=sys.stderr)
        return 1
    shot = args.screenshot or args.page.with_suffix(".png")
    failures = check(args.page, shot, min_rows=args.min_rows, min_images=args.min_images, window=args.window_size)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
