"""Prints `harness.checkpoints.timm_arch`, the table of timm ViT architectures, read off timm's own model definitions.

Run in a scratch virtualenv with timm (not a dependency of the harness; nothing of timm is committed):

    python tests/data/make_timm_arch_table.py > /tmp/table.py   # then paste the two dicts into timm_arch.py

Every architecture registered by `timm/models/vision_transformer.py` is built on torch's meta device (no
memory, no weights) and inspected: the facts a state dict does not show (heads: a fused qkv hides them; the
MLP activation; the pooling; the LayerNorm eps) for those the harness's ViT computes exactly, and for the
others the reason it cannot. `tests/test_timm_open_clip.py::test_arch_table_is_timms` rebuilds the rows with
the installed timm and compares them with the committed table.
"""

from __future__ import annotations

import json
import sys


def _act(module) -> str:
    import torch

    if isinstance(module, torch.nn.GELU):
        return {"none": "exact", "tanh": "tanh"}[module.approximate]
    name = type(module).__name__
    return {"GELUTanh": "tanh", "GELU": "exact"}.get(name, name)  # timm.layers.activations.GELUTanh


def facts(model) -> tuple[int, str, str] | str:
    """(num_heads, gelu, global_pool) of a timm VisionTransformer the harness computes exactly, or a reason."""
    import timm.layers
    import timm.models.vision_transformer as tv
    import torch

    identity = torch.nn.Identity
    if type(model) is not tv.VisionTransformer:
        return f"{type(model).__name__} is not timm's VisionTransformer"
    b = model.blocks[0]
    if type(b) is not tv.Block:
        return f"{type(b).__name__} blocks (not timm's pre-LN Block)"
    why = []
    if type(b.mlp) is not timm.layers.Mlp:
        why.append(f"{type(b.mlp).__name__} MLP")
    if type(b.attn) is not timm.layers.Attention:
        why.append(f"{type(b.attn).__name__} attention")
    if type(b.norm1) is not timm.layers.LayerNorm:
        why.append(type(b.norm1).__name__)
    elif b.norm1.eps != 1e-6:
        why.append(f"LayerNorm eps {b.norm1.eps:g}")
    act = _act(b.mlp.act) if hasattr(b.mlp, "act") else "?"
    if act not in ("exact", "tanh"):
        why.append(act)
    if model.num_reg_tokens:
        why.append(f"register tokens (reg_tokens={model.num_reg_tokens})")
    if not isinstance(b.ls1, identity):
        why.append("layer scale (init_values)")
    if not isinstance(model.norm_pre, identity):
        why.append("a LayerNorm before the blocks (pre_norm)")
    if not isinstance(model.fc_norm, identity):
        why.append("fc_norm (the final LayerNorm after pooling)")
    elif isinstance(model.norm, identity):
        why.append("no final LayerNorm (final_norm=False)")
    if not isinstance(getattr(model.patch_embed, "norm", identity()), identity):
        why.append("a norm in the patch embedding")
    if not isinstance(b.attn.q_norm, identity) if hasattr(b.attn, "q_norm") else False:
        why.append("qk_norm")
    if model.pool_include_prefix:
        why.append("pooling over the prefix tokens")
    pool, cls = model.global_pool, model.has_class_token
    if pool not in ("token", "map", "avg", ""):
        why.append(f"global_pool={pool!r}")
    elif pool in ("map", "avg", "") and cls:
        why.append(f"global_pool={pool!r} beside a class token")
    if pool == "map":
        a = model.attn_pool
        if (type(a).__name__ != "AttentionPoolLatent" or a.num_heads != b.attn.num_heads or a.latent_len != 1
                or a.pos_embed is not None or a.mlp is None or a.mlp.fc1.out_features != b.mlp.fc1.out_features
                or _act(a.mlp.act) != act or getattr(a.norm, "eps", None) != 1e-6
                or not isinstance(a.q_norm, identity) or isinstance(a.q, identity)):
            why.append("an attention pool unlike big_vision's MAPHead")
    if why:
        return ", ".join(why)
    return int(b.attn.num_heads), act, pool


def table() -> tuple[dict, dict]:
    import timm
    import torch

    ok, refused = {}, {}
    names = sorted(n for n in timm.list_models()
                   if timm.models.model_entrypoint(n).__module__ == "timm.models.vision_transformer")
    for name in names:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        f = facts(model)
        (ok if isinstance(f, tuple) else refused)[name] = f
    return ok, refused


def main() -> None:
    import timm

    ok, refused = table()
    print(f"# timm {timm.__version__}, timm/models/vision_transformer.py: {len(ok)} architectures, "
          f"{len(refused)} refused")
    q = json.dumps  # double-quoted literals, as the rest of the code base writes them
    print("TIMM_VIT = {")
    for name, (heads, gelu, pool) in ok.items():
        print(f"    {q(name)}: ({heads}, {q(gelu)}, {q(pool)}),")
    print("}")
    print("TIMM_VIT_REFUSED = {")
    for name, why in refused.items():
        line = f"    {q(name)}: {q(why)},"
        print(line if len(line) <= 116 else f"    {q(name)}:\n        {q(why)},")
    print("}")


if __name__ == "__main__":
    sys.exit(main())
