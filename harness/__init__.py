"""sovit-harness: evaluate ViT / SoViT encoders the way "Getting ViT in Shape" did.

Importing `harness` is cheap; jax and tensorflow load only when something that needs them is used.
"""

import os
from pathlib import Path

__version__ = "0.1.0"
# Files the package ships (package data): the proxy checkpoint and vocabulary, CLIP's prompts and class
# names, the paper's published rows.
ASSETS = Path(__file__).resolve().parent / "assets"


def cpu_core_count() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_encoder(spec=None, **config):
    """Loads an encoder from a checkpoint spec; see `harness.models.encoder.load_encoder`."""
    from harness.models.encoder import load_encoder as _load

    return _load(spec, **config)


__all__ = ["ASSETS", "__version__", "cpu_core_count", "load_encoder"]
