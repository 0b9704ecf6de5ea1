"""Shared test set-up: the import guard below (first, on purpose), then the fixtures the test modules
share (the tiny encoders and task settings behind them are in tests/tiny.py).

triton (pulled in by torch / torchvision, the optional test dependencies of the timm / open_clip parity
tests) must be imported before tensorflow in a process: the other order segfaults inside triton's import
(torch 2.14.1 with tensorflow-cpu 2.21). The harness itself never imports torch, so this concerns only
the test processes, which import both.
"""

import importlib.util

for _name in ("triton", "torch"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)

import pytest  # noqa: E402  (after the guard above, which must run first)

from tests.tiny import make_task_env  # noqa: E402


@pytest.fixture(scope="module")
def task_env(tmp_path_factory, request):
    """Per test module: a random TINY_ENC checkpoint and fresh data / cache / records folders for
    end-to-end task runs (`run_task(task, task_env["ckpt"], data_dir=..., ...)`)."""
    return make_task_env(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]))
