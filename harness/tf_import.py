"""TensorFlow, imported one way: on first use, hidden from the accelerators, and quietly under the CLI.

TF costs seconds to import, and `harness --help`, `harness ls tasks` and the report must not pay for it, so
no module imports it at load time: the data pipeline and the pp ops use `tf`, a stand-in that imports
TensorFlow at its first attribute access (`tensorflow()`, once per process). The CLI also calls
`quiet_tensorflow_import()` before any command runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys


@functools.cache
def tensorflow():
    """The tensorflow module, imported on the first call."""
    import tensorflow as tf

    # TF must not take the accelerators that JAX uses; a no-op for tensorflow-cpu.
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised: leave it
        pass
    return tf


class _LazyTensorflow:
    """`tf.<name>` is `tensorflow().<name>`: TF is imported when the first op needs it."""

    def __getattr__(self, name: str):
        return getattr(tensorflow(), name)

    def __repr__(self) -> str:
        return "<tensorflow, imported on first use>"


tf = _LazyTensorflow()


# ------------------------------------------------------------------------------------ the CLI's quiet
@contextlib.contextmanager
def _stderr_fd_silenced():
    """Points file descriptor 2 at /dev/null for the block (C++ code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietTensorflowImport:
    """A sys.meta_path finder that runs the first `import tensorflow` with fd 2 silenced: TF's C++ logs
    "All log messages before absl::InitializeLog()" and a oneDNN notice at import, whatever
    TF_CPP_MIN_LOG_LEVEL says, and those lines would frame the one line a user error prints. A failed
    import still raises as usual. TF stays a lazy import (it costs seconds, and `--help` must not pay)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; find the real spec without us
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            with _stderr_fd_silenced():
                exec_module(module)

        spec.loader.exec_module = quiet_exec
        return spec


def quiet_tensorflow_import() -> None:
    """For the CLI: TensorFlow's (and TFDS's) start-up chatter is not for our users. TF's C++ logs below
    errors are off unless TF_CPP_MIN_LOG_LEVEL says otherwise, its first import runs with fd 2 silenced,
    and TFDS's absl warnings ("Variant folder ... has no dataset_info.json") are dropped."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowImport())
    logging.getLogger("absl").setLevel(logging.ERROR)


__all__ = ["quiet_tensorflow_import", "tensorflow", "tf"]
