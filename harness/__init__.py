"""sovit-harness: evaluate ViT / SoViT encoders the way "Getting ViT in Shape" did.

Importing `harness` is cheap; jax and tensorflow load only when something that needs them is used.
"""

__version__ = "0.1.0"


def load_encoder(spec=None, **config):
    """Loads an encoder from a checkpoint spec; see `harness.encoder.load_encoder`."""
    from harness.encoder import load_encoder as _load

    return _load(spec, **config)


__all__ = ["__version__", "load_encoder"]
