"""An independent numpy implementation of the ViT forward pass, written from the math of big_vision's ViT
(not from our flax code), used as the oracle in test_encoder.py. Works on flat "/"-keyed params."""

import math

import numpy as np


def layer_norm(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def mha(xq, xkv, p, prefix):
    q = np.einsum("nld,dhk->nlhk", xq, p[prefix + "query/kernel"]) + p[prefix + "query/bias"]
    k = np.einsum("nld,dhk->nlhk", xkv, p[prefix + "key/kernel"]) + p[prefix + "key/bias"]
    v = np.einsum("nld,dhk->nlhk", xkv, p[prefix + "value/kernel"]) + p[prefix + "value/bias"]
    logits = np.einsum("nqhk,nshk->nhqs", q, k) / math.sqrt(q.shape[-1])
    logits = logits - logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(-1, keepdims=True)
    o = np.einsum("nhqs,nshk->nqhk", w, v)
    return np.einsum("nqhk,hkd->nqd", o, p[prefix + "out/kernel"]) + p[prefix + "out/bias"]


def mlp(x, p, prefix):
    h = gelu_tanh(x @ p[prefix + "Dense_0/kernel"] + p[prefix + "Dense_0/bias"])
    return h @ p[prefix + "Dense_1/kernel"] + p[prefix + "Dense_1/bias"]


def sincos2d(h, w, d, temperature=10_000.0):
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / temperature ** (np.arange(d // 4) / (d // 4 - 1))
    x = x.reshape(-1)[:, None] * omega[None]
    y = y.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], 1)[None]


def forward(p, images, *, pool_type, posemb="learn", depth=None):
    """Returns dict of stem, encoded, pre_logits_2d, pre_logits (if pooled), logits (if head)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    kern = p["embedding/kernel"]
    ph, pw, _, d = kern.shape
    n, H, W, _ = images.shape
    gh, gw = H // ph, W // pw
    # Patchify by reshaping (an independent route from a strided convolution).
    patches = images.reshape(n, gh, ph, gw, pw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh, gw, ph * pw * 3)
    stem = patches @ kern.reshape(ph * pw * 3, d) + p["embedding/bias"]
    out = {"stem": stem}
    x = stem.reshape(n, gh * gw, d)
    x = x + (p["pos_embedding"] if posemb == "learn" else sincos2d(gh, gw, d))
    if pool_type == "tok":
        x = np.concatenate([np.repeat(p["cls"], n, 0), x], 1)
    depth = depth or len({k.split("/")[1] for k in p if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        y = layer_norm(x, p[b + "LayerNorm_0/scale"], p[b + "LayerNorm_0/bias"])
        x = x + mha(y, y, p, b + "MultiHeadDotProductAttention_0/")
        y = layer_norm(x, p[b + "LayerNorm_1/scale"], p[b + "LayerNorm_1/bias"])
        x = x + mlp(y, p, b + "MlpBlock_0/")
    x = layer_norm(x, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])
    out["encoded"] = x  # every token: a tok model's class token first (big_vision's `encoded`)
    patches = x[:, 1:] if pool_type == "tok" else x
    pooled = None
    if pool_type == "map":
        probe = np.repeat(p["MAPHead_0/probe"], n, 0)
        y = mha(probe, x, p, "MAPHead_0/MultiHeadDotProductAttention_0/")
        z = layer_norm(y, p["MAPHead_0/LayerNorm_0/scale"], p["MAPHead_0/LayerNorm_0/bias"])
        pooled = (y + mlp(z, p, "MAPHead_0/MlpBlock_0/"))[:, 0]
    elif pool_type == "gap":
        pooled = x.mean(1)
    elif pool_type in ("0", "tok"):
        pooled = x[:, 0]
    elif pool_type == "none":
        pooled = x  # big_vision: pre_logits is then the token sequence
    x2d = patches.reshape(n, gh, gw, d)
    if "pre_logits/kernel" in p:
        x2d = np.tanh(x2d @ p["pre_logits/kernel"] + p["pre_logits/bias"])
        pooled = None if pooled is None else np.tanh(pooled @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    out["pre_logits_2d"] = x2d
    out["pre_logits"] = pooled
    if "head/kernel" in p:
        out["logits"] = pooled @ p["head/kernel"] + p["head/bias"]
    return out
