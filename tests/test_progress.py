"""`harness.progress`: a tqdm bar on a terminal (a real pseudo-terminal here), one line every ~10 s
elsewhere (a fake clock), nothing when disabled, and the one place that builds progress bars."""

import fcntl
import io
import os
import re
import select
import struct
import termios
import time
from pathlib import Path

import pytest

from harness import progress
from harness.progress import LOG_INTERVAL_S, Progress

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_at_the_interval_then_a_final_line():
    clock, out = FakeClock(), io.StringIO()
    assert LOG_INTERVAL_S == 10.0
    bar = Progress(1000, "features proxy_scenes/train", "img", stream=out, clock=clock)
    for _ in range(25):  # 40 img every 1 s: 25 s in all
        clock.t += 1.0
        bar.update(40)
    assert out.getvalue().splitlines() == [
        "features proxy_scenes/train: 400/1000 img (40%), 40.0 img/s, ETA 00:15",
        "features proxy_scenes/train: 800/1000 img (80%), 40.0 img/s, ETA 00:05",
    ]
    bar.close()
    assert out.getvalue().splitlines()[-1] == "features proxy_scenes/train: 1000/1000 img (100%), 40.0 img/s, done in 00:25"
    bar.close()  # a second close writes nothing
    assert "\r" not in out.getvalue() and len(out.getvalue().splitlines()) == 3


def test_log_lines_resume_postfix_slow_rates_and_hours():
    clock, out = FakeClock(), io.StringIO()
    # Resumed at step 100 of 10000: the rate counts this run's steps only; the loss follows the counts.
    with Progress(10_000, "LiT train", "step", initial=100, stream=out, clock=clock) as bar:
        clock.t += 12.0
        bar.set_postfix(loss="2.3456")
        bar.update(3)
        assert out.getvalue() == "LiT train: 103/10000 step (1%), 0.25 step/s, ETA 10:59:48, loss=2.3456\n"
        clock.t += 3.0
        bar.update_to(10_000)  # a caller that knows the running total
        assert len(out.getvalue().splitlines()) == 1  # 3 s after the last line: none yet
    assert out.getvalue().splitlines()[-1] == "LiT train: 10000/10000 step (100%), 660.0 step/s, done in 00:15, loss=2.3456"


def test_a_loop_stopped_early_writes_no_last_line_and_disabled_writes_nothing():
    clock, out = FakeClock(), io.StringIO()
    with pytest.raises(KeyboardInterrupt), Progress(50, "eval val", "batch", stream=out, clock=clock) as bar:
        clock.t += 10.0
        bar.update(5)
        raise KeyboardInterrupt
    assert out.getvalue() == "eval val: 5/50 batch (10%), 0.5 batch/s, ETA 01:30\n"  # the error line follows
    quiet = io.StringIO()
    with Progress(5, "text", "text", enabled=False, stream=quiet, clock=clock) as bar:
        clock.t += 60.0
        bar.update(5)
    assert quiet.getvalue() == ""
    assert progress.close_all() is False  # no bar on a terminal: no newline owed


def test_defaults_to_stderr_looked_up_when_writing(capsys):
    with Progress(2, "decode", "ex", interval_s=0.0) as bar:
        bar.update(1)
        bar.update(1)
    err = capsys.readouterr().err.splitlines()
    assert [ln.split(",")[0] for ln in err] == ["decode: 1/2 ex (50%)", "decode: 2/2 ex (100%)", "decode: 2/2 ex (100%)"]
    assert err[-1].split(", ")[-1].startswith("done in ")


def _read_all(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


def test_on_a_terminal_a_tqdm_bar_and_close_all_closes_it():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    tty = os.fdopen(slave, "w")
    try:
        bar = Progress(10, "features proxy_digits/test", "img", stream=tty)
        assert bar._bar is not None  # detected as a terminal: tqdm draws
        time.sleep(0.2)  # past tqdm's mininterval (0.1 s), so that the update redraws
        bar.update(3)
        tty.flush()
        shown = _read_all(master)
        assert "features proxy_digits/test:" in shown and re.search(r"\|\s*3/10 \[", shown), shown
        assert "\r" in shown  # redrawn in place
        assert progress.close_all() is True  # the CLI then starts its error line on a fresh line
        from tqdm import tqdm

        assert bar._bar not in tqdm._instances
        bar.close()  # closing again after close_all is harmless
        tty.flush()
        _read_all(master)
    finally:
        tty.close()
        os.close(master)
    assert progress.close_all() is False


def test_every_progress_display_goes_through_harness_progress():
    """One helper: no module but harness/progress.py builds a tqdm bar."""
    sources = [*(ROOT / "harness").rglob("*.py"), *(ROOT / "tasks").glob("*.py")]
    users = sorted(str(p.relative_to(ROOT)) for p in sources if "tqdm" in p.read_text() and p.name != "progress.py")
    assert users == []
    sites = {str(p.relative_to(ROOT)) for p in sources if re.search(r"\bProgress\(", p.read_text())}
    assert {"harness/eval/features.py", "harness/eval/cache.py", "harness/train/loop.py", "harness/train/decoder.py",
            "harness/models/text.py", "harness/data/texts.py", "tasks/imagenet_finetune.py"} <= sites
