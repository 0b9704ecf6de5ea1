"""Shared test set-up.

triton (pulled in by torch / torchvision, the optional test dependencies of the timm / open_clip parity
tests) must be imported before tensorflow in a process: the other order segfaults inside triton's import
(torch 2.14.1 with tensorflow-cpu 2.21). The harness itself never imports torch, so this concerns only
the test processes, which import both.
"""

import importlib.util

for _name in ("triton", "torch"):
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)
