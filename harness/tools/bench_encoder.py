"""The models `harness bench` times: the harness's encoder (random parameters, filled leaf by leaf so that
host memory holds about one copy) and, with `--compare hf`, Hugging Face's `SiglipVisionModel` of the same
shape in PyTorch (an optional dependency, imported only then)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from harness import checkpoints, cpu_core_count
from harness.errors import HarnessError
from harness.models.encoder import Encoder, abstract_params, build_model, resolve_config
from harness.models.variants import Shape
from harness.models.vit import CUDNN_REFUSALS, resolve_attention
from harness.scale import sharding
from harness.scale.runtime import tune_malloc
from harness.tools.bench_peak import timed


def encoder_config(variant: str, res: int, dtype: str, scan: bool = True, **overrides) -> dict:
    user = {"variant": variant, "res": res, "pool_type": "map", "scan": scan, "dtype_mm": dtype, **overrides}
    return resolve_config({}, {}, user, path="bench")


def random_params(cfg: dict, seed: int = 0):
    """Shapes from `jax.eval_shape`, values from numpy, moved to the device one leaf at a time: host memory
    holds about one copy of the model (a jitted init would hold params plus its intermediate buffers)."""
    model = build_model(cfg)
    shapes = abstract_params(model, cfg["res"])
    rng = np.random.default_rng(seed)
    params = {}
    for k, s in shapes.items():
        host = rng.standard_normal(s.shape, np.float32)
        host *= 0.02
        params[k] = jnp.asarray(host, s.dtype)
        del host
    return model, checkpoints.unflatten(params)


def measure_encoder(variant: str, res: int, batches, dtype: str, *, scan: bool = True, min_seconds: float = 2.0,
                    overrides: dict | None = None) -> list[dict]:
    """Compile seconds and images/s of the forward pass (`pre_logits`) for each batch size."""
    cfg = encoder_config(variant, res, dtype, scan, **(overrides or {}))
    t0 = time.perf_counter()
    model, params = random_params(cfg)
    jax.block_until_ready(params)
    build_s = time.perf_counter() - t0
    tune_malloc()  # as `load_encoder` does after loading
    enc = Encoder(model=model, params=params, config=cfg, spec="random", sha256=None)
    gflops = enc.shape.gflops(res)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x)[1]["pre_logits"])
    devices = jax.device_count()
    if devices > 1:  # as `Encoder.features` runs on a mesh: batch split, params replicated
        params = sharding.place(params, sharding.param_shardings(params, strategy="replicate"))
    rows = []
    for b in batches:
        if b % devices:
            continue  # a batch that does not split over the devices is not measured (the table shows none)
        x = np.random.default_rng(1).uniform(-1, 1, (b, res, res, 3)).astype(np.float32)
        x = sharding.global_batch(x) if devices > 1 else jnp.asarray(x)
        t0 = time.perf_counter()
        compiled = apply.lower(params, x).compile()
        compile_s = time.perf_counter() - t0
        compiled(params, x).block_until_ready()
        sec = timed(lambda: compiled(params, x).block_until_ready(), min_seconds=min_seconds)
        attention = resolve_attention("auto", jax.default_backend(), cfg["dtype_mm"], cfg["width"] // cfg["num_heads"])
        if attention == "cudnn" and CUDNN_REFUSALS:
            attention = "xla (cuDNN refused)"
        rows.append({"impl": "harness (jax)" if devices == 1 else f"harness (jax, {devices} CPU devices)",
                     "attention": attention,
                     "cpu_devices": devices, "variant": variant, "res": res, "batch": b, "dtype": dtype,
                     "scan": scan, "params_m": enc.shape.num_params(res) / 1e6, "gflops_per_image": gflops,
                     "build_seconds": build_s, "compile_seconds": compile_s, "seconds_per_batch": sec,
                     "images_per_s": b / sec, "achieved_gflops_per_s": gflops * b / sec})
    return rows


def hf_vision_model(cfg: dict):
    """A randomly initialised Hugging Face `SiglipVisionModel` of the same shape (MAP head included)."""
    try:
        from transformers import SiglipVisionConfig, SiglipVisionModel
    except ImportError:
        raise HarnessError("--compare hf needs PyTorch and transformers: `pip install torch==2.13.0 "
                           "transformers` into this virtualenv") from None
    hc = SiglipVisionConfig(hidden_size=cfg["width"], intermediate_size=cfg["mlp_dim"],
                            num_hidden_layers=cfg["depth"], num_attention_heads=cfg["num_heads"],
                            image_size=cfg["res"], patch_size=cfg["patch_size"][0], vision_use_head=True)
    return SiglipVisionModel(hc).eval()


def measure_hf(variant: str, res: int, batches, dtype: str, *, min_seconds: float = 2.0,
               overrides: dict | None = None) -> list[dict]:
    import torch

    cfg = encoder_config(variant, res, "float32", True, **(overrides or {}))
    threads = cpu_core_count()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = hf_vision_model(cfg)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    build_s = time.perf_counter() - t0
    tune_malloc(backend="cpu")  # the same process setting on both sides: torch's CPU allocator maps too
    num_params = sum(p.numel() for p in model.parameters())
    shape = Shape(width=cfg["width"], depth=cfg["depth"], mlp_dim=cfg["mlp_dim"], num_heads=cfg["num_heads"],
                  patch=cfg["patch_size"][0], pool_type="map")
    gflops = shape.gflops(res)
    rows = []
    for b in batches:
        x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (b, 3, res, res)).astype(np.float32))
        x = x.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)

        def call():
            with torch.inference_mode():
                model(pixel_values=x).pooler_output.float().sum().item()

        call()
        sec = timed(call, min_seconds=min_seconds)
        rows.append({"impl": "hf (torch)", "variant": variant, "res": res, "batch": b, "dtype": dtype,
                     "params_m": num_params / 1e6, "gflops_per_image": gflops, "build_seconds": build_s,
                     "seconds_per_batch": sec, "images_per_s": b / sec, "achieved_gflops_per_s": gflops * b / sec,
                     "torch_threads": threads, "torch": torch.__version__})
    return rows
