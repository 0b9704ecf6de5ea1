"""The foundation demo: a tiny SoViT-shaped encoder, saved in big_vision format, reloaded, inspected."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from harness.models.encoder import load_encoder
from harness.models.variants import model_table


def main(out_dir: str = "runs/demo") -> None:
    out = Path(out_dir)
    # A SoViT-shaped miniature: MAP head, learned posemb, patch 4 on 32 px images.
    enc = load_encoder("random:0", width=64, depth=3, mlp_dim=192, num_heads=4, patch_size=4, res=32,
                       pool_type="map", num_classes=10)
    path = enc.save(str(out / "tiny_sovit.npz"))
    click.echo(f"saved a random tiny encoder in big_vision .npz format: {path}")
    reloaded = load_encoder(path)  # config read off the checkpoint tree
    click.echo(f"reloaded config: { {k: reloaded.config[k] for k in ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size', 'pool_type', 'res')} }")
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    feats = reloaded.features(images)
    same = all(np.allclose(feats[k], enc.features(images)[k], atol=1e-6) for k in feats)
    for k, v in feats.items():
        click.echo(f"  {k:<14} {tuple(v.shape)}")
    click.echo(f"features identical after the round trip: {same}")
    click.echo("")
    click.echo(f"{'variant':<10} {'params (M)':>11} {'GFLOPs@224':>11} {'GFLOPs@518':>11}")
    for r224, r518 in zip(model_table(224), model_table(518)):
        click.echo(f"{r224['variant']:<10} {r224['params_m']:>11.1f} {r224['gflops']:>11.1f} {r518['gflops']:>11.1f}")
