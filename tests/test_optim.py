"""harness.train.optim against big_vision's own `optax.make` (fixtures in tests/data/bv_optax/, made by
tests/data/make_bv_optax_fixtures.py; see tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.train import optim

FIXTURES = Path(__file__).parent / "data" / "bv_optax"
META = json.loads((FIXTURES / "optax.json").read_text())
STEPS = META["steps"]
# Our call for each of the fixture's big_vision configs (same lr / wd / clip / schedule / multipliers).
OURS = {
    "adafactor": dict(name="adafactor", lr=3e-4, wd=1e-4, grad_clip_norm=1.0, warmup=1),
    "adam": dict(name="adam", lr=1e-3, wd=1e-2, grad_clip_norm=1.0, warmup=2),
    "momentum": dict(name="sgd_momentum", lr=0.03, grad_clip_norm=1.0, warmup=3,
                     lr_mults={"Dense_0/": 0.5, "Embed_0/": 0.25}),
    "momentum_wd": dict(name="sgd_momentum", lr=0.1, wd=1e-3, warmup=0),
}


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _flatten(tree, prefix="") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": np.asarray(v)})
    return out


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURES / "optax.npz") as z:
        arrays = dict(z)
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    grads = [{k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"grads/{i}/")} for i in range(STEPS)]
    updates = {case: [{k.split("/", 3)[3]: v for k, v in arrays.items() if k.startswith(f"updates/{case}/{i}/")}
                      for i in range(STEPS)] for case in META["cases"]}
    return params, grads, updates


def _ours(case: str, params: dict):
    o = dict(OURS[case])
    mults = o.pop("lr_mults", None)
    if mults is not None:
        mults = _unflatten({k: np.float32(next((m for p, m in mults.items() if k.startswith(p)), 1.0))
                            for k in params})
    return optim.make_optimizer(o.pop("name"), lr=o.pop("lr"), wd=o.pop("wd", 0.0),
                                grad_clip_norm=o.pop("grad_clip_norm", None),
                                schedule=optim.cosine_schedule(STEPS, o.pop("warmup")), lr_mults=mults)


def _run(tx, params: dict, grads: list) -> list[dict]:
    import jax
    import optax

    p = _unflatten(params)
    state = tx.init(p)

    @jax.jit
    def step(p, state, g):
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state, updates

    out = []
    for g in grads:
        p, state, u = step(p, state, _unflatten(g))
        out.append(_flatten(jax.device_get(u)))
    return out


def _max_rel_error(got: list[dict], want: list[dict]) -> float:
    """Largest |got - want| / max|want| over every leaf and step (updates are O(lr))."""
    worst = 0.0
    for g, w in zip(got, want):
        for k in w:
            scale = max(float(np.abs(w[k]).max()), 1e-30)
            worst = max(worst, float(np.abs(g[k] - w[k]).max()) / scale)
    return worst


@pytest.mark.parametrize("case", sorted(OURS))
def test_chain_reproduces_big_visions_optax_make(fixture, case):
    params, grads, updates = fixture
    got = _run(_ours(case, params), params, grads)
    # The chain is made of the same optax primitives in big_vision's order: on the CPU that made the
    # fixture every update is bit-exact (max error 0). Elsewhere XLA may round float32 differently, and
    # the bfloat16 momentum accumulators (adafactor's EMA, momentum_hp's trace) keep 8 bits of mantissa:
    # one float32 ulp upstream can flip one bf16 rounding, a relative 2^-8 of that leaf's trace (and
    # whether `decay * trace` is rounded to bf16 is the backend's choice: jitted on the CPU it is not,
    # eager it is). Hence
    # 1e-6 for the float32-only chain and 5e-3 for the bf16 ones, far below what a wrong order, scale or
    # mask moves (the old chains, test_old_optax_chains_fail_the_same_check: > 0.1).
    tol = 1e-6 if case == "adam" else 5e-3
    assert _max_rel_error(got, updates[case]) < tol
    for g, w in zip(got, updates[case]):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=tol, atol=tol * float(np.abs(w[k]).max()) + 1e-12)


def test_schedule_is_big_visions_cosine():
    for case, o in OURS.items():
        sched = optim.cosine_schedule(STEPS, o["warmup"])
        got = [float(sched(s)) for s in range(STEPS)]
        np.testing.assert_allclose(got, META["schedules"][case], rtol=1e-6, atol=1e-7)


def test_weight_decay_only_on_kernels_and_not_times_lr(fixture):
    """With zero gradients AdamW-style decay would be lr * wd * param on every leaf; big_vision's is
    schedule * wd * param on `.*/kernel$` only."""
    import jax

    params, _, _ = fixture
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    tx = optim.make_optimizer("sgd", lr=0.5, wd=0.01, schedule=optim.cosine_schedule(100, 0))
    updates, _ = tx.update(_unflatten(zero), tx.init(_unflatten(params)), _unflatten(params))
    updates = _flatten(jax.device_get(updates))
    for k, p in params.items():
        want = -0.01 * p if k.endswith("/kernel") else np.zeros_like(p)  # top-level `kernel`: no "/"
        np.testing.assert_allclose(updates[k], want, rtol=1e-6, atol=1e-9, err_msg=k)


def test_old_optax_chains_fail_the_same_check(fixture):
    """The optimisers the harness used before (optax.adafactor for the decoder, optax.adamw for LiT) are
    far from big_vision's on the same gradients: the check above can fail."""
    import optax

    params, grads, updates = fixture
    old_sched = optax.warmup_cosine_decay_schedule(0.0, 3e-4, 1, STEPS)
    old_adafactor = optax.chain(optax.clip_by_global_norm(1.0),
                                optax.adafactor(old_sched, multiply_by_parameter_scale=False,
                                                clipping_threshold=1.0, weight_decay_rate=1e-4))
    assert _max_rel_error(_run(old_adafactor, params, grads), updates["adafactor"]) > 0.1
    old_adamw = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 2, STEPS), weight_decay=1e-2))
    assert _max_rel_error(_run(old_adamw, params, grads), updates["adam"]) > 0.1


def test_mask_trees_first_match_on_slash_joined_names():
    tree = {"a": {"kernel": 1, "bias": 2}, "head": {"kernel": 3}, "kernel": 4}
    kernels, heads = optim.mask_trees(tree, [r".*/kernel$", r"head/.*"])
    assert kernels == {"a": {"kernel": True, "bias": False}, "head": {"kernel": True}, "kernel": False}
    assert heads == {"a": {"kernel": False, "bias": False}, "head": {"kernel": False}, "kernel": False}


def test_unknown_optimizer_and_bad_kwargs_are_one_line_errors():
    with pytest.raises(HarnessError, match="adafactor, adam, sgd_momentum, sgd"):
        optim.make_optimizer("lamb", lr=1e-3, schedule=optim.cosine_schedule(10))
    with pytest.raises(HarnessError, match="optimizer adam"):
        optim.make_optimizer("adam", lr=1e-3, schedule=optim.cosine_schedule(10), beta2=0.9)


def test_lit_optimiser_defaults_are_siglip_lit_cocos():
    """LiT's optimiser settings against big_vision's own LiT config (tests/data/bv_configs.json, made by
    make_bv_config_fixtures.py from configs/proj/image_text/siglip_lit_coco.py::get_config())."""
    from harness.tasks.lit_zeroshot import LitZeroShotConfig

    bv = json.loads((Path(__file__).parent / "data" / "bv_configs.json").read_text())["siglip_lit_coco"]
    ours = LitZeroShotConfig()
    assert {"scale_by_adam": "adam", "big_vision.scale_by_adafactor": "adafactor"}[bv["optax_name"]] == ours.optimizer
    assert "optax" not in bv  # no b1 / b2 / eps overrides: optax's defaults, as make_optimizer's
    assert (ours.lr, ours.weight_decay, ours.grad_clip_norm) == (bv["lr"], bv["wd"], bv["grad_clip_norm"])
    assert bv["schedule"][-1][1]["decay_type"] == "cosine"
