"""Tools around the harness: the encoder benchmark and the foundation demo."""
