"""timm and open_clip checkpoints (`harness.checkpoints.timm`, `harness.checkpoints.open_clip`): small random models of the SigLIP and augreg
families built by the libraries themselves, every parameter perturbed off its init, saved as safetensors in
the hub layouts, loaded by the harness and compared with the library's own forward.

Skipped when torch, timm or open_clip is not importable (they are optional test dependencies; CI installs
them, see `.ci/run`). Measured max abs errors (timm 1.0.31, open_clip 3.3.0, torch 2.14.1 CPU, float32;
`pytest -s -n 0` prints them; the bound asserted everywhere is 1e-4):
- timm SigLIP family (MAP head, no class token, no head; exact GELU, gelu_tanh for
  vit_so400m_patch16_siglip_256, and the gap variant): `encoded` vs `forward_features` 2.1e-6, `pre_logits`
  vs `forward_head(pre_logits=True)` 4.8e-7 (also through `harness run --ckpt`). The same weights run with
  the tanh GELU instead: `encoded` 2.3e-4 off.
- timm augreg family (class token folded with its posemb row, `tok` pooling, classifier head; also
  `no_embed_class`, `num_heads` from model_args, ImageNet mean/std folded into the patch embedding, a bare
  `<arch>.safetensors`, bfloat16 weights, a legacy config.json): `encoded` 2.9e-6, `pre_logits` 1.4e-6,
  `logits` 3.0e-7.
- open_clip SigLIP (ViT-B-16-SigLIP: exact-GELU text; ViT-B-16-SigLIP2: tanh-GELU text; also the image
  projections `timm_proj='linear'` / `''`): `encode_image` 1.5e-7, `encode_text` 5.0e-7 (both
  L2-normalised), sigmoid logits 3.8e-6; through `lit_zeroshot`, every image's zero-shot hit equals
  open_clip's.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

from click.testing import CliRunner  # noqa: E402

from harness.checkpoints.timm_arch import TIMM_VIT, TIMM_VIT_REFUSED  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.data.text_pp import text_pp_for, tokenize, tokenize_pp  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.models import text  # noqa: E402
from harness.models.encoder import load_encoder  # noqa: E402

ATOL = 1e-4
IMAGENET_NORM = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # timm IMAGENET_DEFAULT_*
MEASURED: dict[str, float] = {}  # filled by the tests; printed with -s for the docstring's numbers


def _perturb(model, seed: int):
    """Every parameter moved off its init (zero biases, unit LayerNorm scales, zero latents), so a wrong
    mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _images(res: int, seed: int = 0, n: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, res, res, 3)).astype(np.float32)


def _torch_input(x: np.ndarray, mean=(0.5,) * 3, std=(0.5,) * 3):
    """The library's own input: [0, 1] pixels normalised with the model's mean / std (the harness feeds
    [-1, 1], which is that for mean = std = 0.5)."""
    x01 = (torch.from_numpy(x).permute(0, 3, 1, 2) + 1) / 2
    return (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _close(name: str, got, want):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    MEASURED[name] = max(MEASURED.get(name, 0.0), err)
    assert err < ATOL, f"{name}: max abs error {err:.3g}"
    return err


def _timm_outputs(model, x, **norm):
    with torch.no_grad():
        ff = model.forward_features(_torch_input(x, **norm))
        return ff.numpy(), model.forward_head(ff, pre_logits=True).numpy(), model.forward_head(ff).numpy()


def _save_timm(model, folder: Path) -> Path:
    from timm.models import save_for_hf

    # The hub layout: config.json (architecture, model_args, pretrained_cfg) + model.safetensors, and the
    # pickled pytorch_model.bin beside it, which the harness must ignore.
    save_for_hf(model, str(folder), safe_serialization="both")
    assert (folder / "model.safetensors").is_file() and (folder / "pytorch_model.bin").is_file()
    return folder


def _check_timm(enc, model, x, tag: str, **norm):
    ff, pre, logits = _timm_outputs(model, x, **norm)
    out = enc.features(x)
    _close(f"{tag} encoded", out["encoded"], ff)
    _close(f"{tag} pre_logits", out["pre_logits"], pre)
    if model.num_classes:
        _close(f"{tag} logits", out["logits"], logits)
    else:
        assert "logits" not in out


# --------------------------------------------------------------------------------------- timm SigLIP
SIGLIP_ARCHS = [
    # arch, the harness's expected (gelu, pool_type), small kwargs (heads: the architecture's own)
    ("vit_so400m_patch14_siglip_224", ("exact", "map"), dict(img_size=28, patch_size=14, embed_dim=64)),
    ("vit_so400m_patch16_siglip_256", ("tanh", "map"), dict(img_size=32, patch_size=16, embed_dim=64)),
    ("vit_base_patch16_siglip_gap_224", ("exact", "gap"), dict(img_size=32, patch_size=8, embed_dim=48)),
]


@pytest.mark.parametrize("arch,expect,kw", SIGLIP_ARCHS, ids=[a for a, _, _ in SIGLIP_ARCHS])
def test_timm_siglip_family_matches_timm(arch, expect, kw, tmp_path):
    torch.manual_seed(0)
    model = _perturb(timm.create_model(arch, pretrained=False, depth=2, mlp_ratio=3.7362, num_classes=0, **kw), 1)
    enc = load_encoder(str(_save_timm(model, tmp_path / arch)))
    heads, gelu, _ = TIMM_VIT[arch]
    assert (enc.config["gelu"], enc.config["pool_type"]) == expect and enc.config["num_heads"] == heads
    assert enc.config["res"] == kw["img_size"] // kw["patch_size"] * kw["patch_size"]
    x = _images(enc.res)
    _check_timm(enc, model, x, "timm siglip")
    # The fact from the table matters: the same weights with big_vision's tanh GELU are far further off
    # (on a 2-block width-64 model; the gap grows with depth).
    if gelu == "exact":
        import dataclasses

        want = _timm_outputs(model, x)[0]
        exact = np.abs(enc.features(x, ["encoded"])["encoded"] - want).max()
        tanh = dataclasses.replace(enc, model=enc.model.clone(gelu="tanh"))
        err = float(np.abs(tanh.features(x, ["encoded"])["encoded"] - want).max())
        MEASURED["timm siglip encoded with tanh GELU instead"] = err
        assert err > 20 * exact
        with pytest.raises(HarnessError, match="architecture uses gelu=exact"):
            load_encoder(str(tmp_path / arch), gelu="tanh")


# --------------------------------------------------------------------------------------- timm augreg
def test_timm_augreg_family_matches_timm(tmp_path):
    """vit_base_patch16_224 (the augreg weights' architecture): class token, `token` pooling, a head."""
    import safetensors.torch

    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_classes=5)
    model = _perturb(timm.create_model("vit_base_patch16_224", pretrained=False, **kw), 2)
    assert model.pos_embed.shape[1] == 16 + 1  # timm's layout: a posemb row for the class token
    enc = load_encoder(str(_save_timm(model, tmp_path / "augreg")))
    assert enc.config["pool_type"] == "tok" and enc.config["num_heads"] == 12 and enc.config["gelu"] == "exact"
    assert enc.config["num_classes"] == 5
    x = _images(32, seed=1)
    _check_timm(enc, model, x, "timm augreg")

    # An older hub config.json: one flat dict, mean/std at the top level (timm reads it so too).
    import shutil

    legacy = tmp_path / "legacy"
    shutil.copytree(tmp_path / "augreg", legacy)
    (legacy / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 5,
                                                    "input_size": [3, 32, 32], **IMAGENET_NORM}))
    _check_timm(load_encoder(str(legacy)), model, x, "timm augreg", **IMAGENET_NORM)

    # A bare file named after its architecture (and tag) loads the same.
    bare = tmp_path / "vit_base_patch16_224.augreg_in21k.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(bare))
    _check_timm(load_encoder(str(bare)), model, x, "timm augreg")

    # bfloat16 weights (numpy has no bfloat16: read from the file's own layout) against timm run with the
    # same rounded weights.
    half = tmp_path / "vit_base_patch16_224.bf16.safetensors"
    safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, str(half))
    model.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    _check_timm(load_encoder(str(half)), model, x, "timm augreg")


def test_timm_no_embed_class_num_heads_and_normalisation(tmp_path):
    """`no_embed_class` (big_vision's own cls layout), `num_heads` from model_args, and a model trained on
    ImageNet mean/std: its normalisation is folded into the patch embedding, so [-1, 1] inputs match."""
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48,
                              depth=2, num_heads=4, num_classes=3, no_embed_class=True,
                              pretrained_cfg_overlay=IMAGENET_NORM)
    model = _perturb(model, 3)
    assert model.pos_embed.shape[1] == 16
    folder = _save_timm(model, tmp_path / "nec")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_args"]["num_heads"] == 4 and cfg["pretrained_cfg"]["mean"] == list(IMAGENET_NORM["mean"])
    enc = load_encoder(str(folder))
    assert enc.config["num_heads"] == 4 and enc.config["pool_type"] == "tok"
    _check_timm(enc, model, _images(32, seed=2), "timm augreg", **IMAGENET_NORM)


PROBE_TASK = '''
import dataclasses
import numpy as np
from harness.api import Metric, Task


@dataclasses.dataclass
class ProbeConfig:
    seed: int = 0


class PreLogitsNorm(Task):
    """Per-image L2 norm of pre_logits on seeded images in [-1, 1]."""
    name = "pre_logits_norm"
    description = "test-only task"
    Config = ProbeConfig

    def metrics(self, config):
        return [Metric("pre_logits_norm/mean", higher_is_better=False, unit="raw")]

    def run(self, encoder, data, config):
        x = np.random.default_rng(config.seed).uniform(-1, 1, (3, encoder.res, encoder.res, 3)).astype(np.float32)
        norms = np.linalg.norm(encoder.features(x, ["pre_logits"])["pre_logits"], axis=-1)
        data.note_dataset("random_uniform", "all", 3)
        data.note_per_example("pre_logits_norm/mean", norms)
        return {"pre_logits_norm/mean": float(norms.mean())}
'''


def test_harness_run_ckpt_on_a_timm_folder(tmp_path, monkeypatch):
    """`harness run --ckpt <timm folder>` (a test-only task registered through the entry-point group, as in
    test_cli): the recorded numbers are timm's, and the record's encoder config states gelu=exact."""
    site = tmp_path / "site"
    (site / "probe_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "probe_plugin.py").write_text(PROBE_TASK)
    (site / "probe_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-plugin\n"
                                                                   "Version: 0.1\n")
    (site / "probe_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[harness.tasks]\npre_logits_norm = probe_plugin:PreLogitsNorm\n")
    monkeypatch.syspath_prepend(str(site))
    torch.manual_seed(0)
    model = _perturb(timm.create_model("vit_so400m_patch14_siglip_224", pretrained=False, img_size=28,
                                       patch_size=14, embed_dim=64, depth=2, num_classes=0), 8)
    folder = _save_timm(model, tmp_path / "siglip")
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["run", "--task", "pre_logits_norm", "--ckpt", str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads(next(out.glob("pre_logits_norm__*.json")).read_text())
    assert rec["checkpoint"]["config"]["gelu"] == "exact" and rec["checkpoint"]["config"]["pool_type"] == "map"
    x = np.random.default_rng(0).uniform(-1, 1, (3, 28, 28, 3)).astype(np.float32)
    _close("timm siglip pre_logits", rec["per_example"]["pre_logits_norm/mean"],
           np.linalg.norm(_timm_outputs(model, x)[1], axis=-1))


# ----------------------------------------------------------------------------------------- open_clip
def _small_open_clip(name: str, monkeypatch, seed: int, vision: dict | None = None):
    """open_clip's own config for `name`, with the text tower shrunk and the timm trunk built small: the
    trunk's entry point gets small sizes (its heads, GELU, pooling stay the architecture's), as open_clip's
    `TimmModel` passes no sizes of its own."""
    from timm.models import _registry

    cfg = open_clip.get_model_config(name)
    arch = cfg["vision_cfg"]["timm_model_name"]
    monkeypatch.setitem(_registry._model_entrypoints, arch, functools.partial(
        _registry._model_entrypoints[arch], img_size=32, patch_size=8, embed_dim=48, depth=2))
    cfg = {**cfg, "embed_dim": 48, "vision_cfg": {**cfg["vision_cfg"], "image_size": 32, **(vision or {})},
           "text_cfg": {**cfg["text_cfg"], "context_length": 8, "vocab_size": 100, "width": 36, "heads": 6,
                        "layers": 2}}
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    return _perturb(model, seed), cfg


def _save_open_clip(model, cfg: dict, folder: Path) -> Path:
    import safetensors.torch
    from open_clip.push_to_hf_hub import save_config_for_hf

    folder.mkdir(parents=True)
    safetensors.torch.save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    model.visual.image_mean, model.visual.image_std = (0.5,) * 3, (0.5,) * 3  # SigLIP's, as its hub config
    save_config_for_hf(model, folder / "open_clip_config.json", cfg)  # open_clip's own writer of the layout
    return folder


@pytest.mark.parametrize("name,text_gelu", [("ViT-B-16-SigLIP", "exact"), ("ViT-B-16-SigLIP2", "tanh")])
def test_open_clip_siglip_matches_open_clip(name, text_gelu, tmp_path, monkeypatch):
    model, cfg = _small_open_clip(name, monkeypatch, seed=4)
    folder = _save_open_clip(model, cfg, tmp_path / name)
    enc = load_encoder(str(folder))
    assert enc.config["pool_type"] == "map" and enc.config["gelu"] == "exact"  # the timm trunk's nn.GELU
    tower = text.load_text_tower(str(folder))
    assert tower.config["gelu"] == text_gelu and tower.config["pool_type"] == "last"
    assert tower.config["max_len"] == 8 and tower.config["num_heads"] == 6

    x = _images(32, seed=3)
    ids = np.random.default_rng(5).integers(0, 100, (4, 8))
    with torch.no_grad():
        zi = model.encode_image(_torch_input(x), normalize=True).numpy()
        zt = model.encode_text(torch.from_numpy(ids), normalize=True).numpy()
        logits = (torch.from_numpy(zi) @ torch.from_numpy(zt).T * model.logit_scale.exp()
                  + model.logit_bias).numpy()
    zimg = text.l2_normalize(enc.features(x, ["pre_logits"])["pre_logits"])
    _close("open_clip encode_image", zimg, zi)
    _close("open_clip encode_text", tower.embed(ids), zt)
    assert tower.log_t == pytest.approx(model.logit_scale.item(), rel=1e-6)
    assert tower.b == pytest.approx(model.logit_bias.item(), rel=1e-6)
    _close("open_clip logits", zimg @ tower.embed(ids).T * tower.scale + tower.b, logits)


@pytest.mark.parametrize("proj", [dict(timm_proj="linear", timm_proj_bias=True), dict(timm_proj="")])
def test_open_clip_image_projections(proj, tmp_path, monkeypatch):
    """open_clip's TimmModel with a projection after the trunk: `timm_proj='linear'` adds visual.head.proj,
    '' keeps timm's own classifier as the projection; either is the harness's `head` (its `logits`)."""
    model, cfg = _small_open_clip("ViT-B-16-SigLIP", monkeypatch, seed=9, vision=proj)
    enc = load_encoder(str(_save_open_clip(model, cfg, tmp_path / "oc")))
    assert enc.config["num_classes"] == 48
    x = _images(32, seed=4)
    with torch.no_grad():
        want = model.encode_image(_torch_input(x), normalize=True).numpy()
    _close("open_clip encode_image", text.l2_normalize(enc.features(x, ["logits"])["logits"]), want)


def test_open_clip_pair_runs_lit_zeroshot_without_training(tmp_path, monkeypatch):
    """`harness run --task lit_zeroshot --ckpt <open_clip folder>`: the checkpoint's towers and the
    sentencepiece model shipped in the folder, no LiT training; every image's hit is the one open_clip's
    own encode_image / encode_text give for the same pixels and token ids."""
    import sentencepiece as spm

    from harness import data
    from harness.data.builders.proxy_scenes import CLASS_NAMES
    from harness.data.tokenizer import Tokenizer

    model, cfg = _small_open_clip("ViT-B-16-SigLIP", monkeypatch, seed=6)
    folder = _save_open_clip(model, cfg, tmp_path / "oc")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(list(CLASS_NAMES) * 4 + ["a photo of the large"] * 4),
                                   model_prefix=str(folder / "spiece"), vocab_size=18, model_type="word",
                                   minloglevel=2)
    out, ds = tmp_path / "runs", "proxy_scenes/tiny"
    r = CliRunner().invoke(main, [
        "run", "--task", "lit_zeroshot", "--ckpt", str(folder), "--out", str(out), "--data-dir", str(tmp_path / "tfds"),
        "--cache-dir", str(tmp_path / "cache"), "--set", f"zeroshot_datasets={ds}", "--set", "retrieval_datasets=",
        "--set", "prompt_templates=class_name_only", "--set", "pad_value=1", "--set", "train_steps=0",
        "--set", "text_pp=big_vision"])  # a bare sentencepiece model: the folder holds no HF tokenizer
    assert r.exit_code == 0, r.output
    rec = json.loads(next(out.glob("lit_zeroshot__*.json")).read_text())
    assert rec["info"]["text_tower"]["source"] == "checkpoint" and "lit_training" not in rec["info"]
    assert rec["info"]["text_tower"]["gelu"] == "exact" and rec["checkpoint"]["config"]["gelu"] == "exact"
    assert rec["info"]["tokenizer"] == str(folder / "spiece.model")
    hits = np.asarray(rec["per_example"][f"lit_zeroshot/{ds}/top1"])

    pp = next(d["pp"] for d in rec["datasets"] if d["role"] == "zeroshot_test")
    images, labels = [], []
    for b in data.iterate(ds, "test", batch_size=24, pp=pp, data_dir=str(tmp_path / "tfds")):
        images.append(b["image"][b["_mask"]])
        labels.append(b["label"][b["_mask"]])
    ids = tokenize(Tokenizer(folder / "spiece.model"), [n.lower() for n in CLASS_NAMES], 8, pad_value=1)
    with torch.no_grad():
        zi = model.encode_image(_torch_input(np.concatenate(images)), normalize=True)
        zt = model.encode_text(torch.from_numpy(ids.astype(np.int64)), normalize=True)
    want = (torch.argmax(zi @ zt.T, dim=1).numpy() == np.concatenate(labels)) * 100.0
    np.testing.assert_array_equal(hits, want)


def _siglip_tokenizer_folder(folder: Path, texts: list[str]):
    """A sentencepiece model with T5's ids (pad 0, EOS 1, unk 2, as SigLIP's c4_en) and Hugging Face's
    SiglipTokenizer over it saved into `folder`, as `save_pretrained` lays a hub tokenizer out."""
    import sentencepiece as spm
    transformers = pytest.importorskip("transformers")

    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts * 8), model_prefix=str(folder / "spm_src"),
                                   vocab_size=30, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
                                   character_coverage=1.0)
    transformers.SiglipTokenizer(vocab_file=str(folder / "spm_src.model")).save_pretrained(str(folder))
    for f in folder.glob("spm_src.*"):
        f.unlink()


def test_open_clip_text_pp_is_open_clips_own_tokenizer(tmp_path, monkeypatch):
    """An open_clip SigLIP folder that holds its Hugging Face tokenizer gets open_clip's own text pp by
    default: `HFTokenizer(folder, clean="canonicalize")`'s ids (underscores to spaces, punctuation and case
    dropped, EOS kept on truncation, padded with the tokenizer's pad token), and open_clip's encode_text of
    those ids; without the tokenizer files it is one line naming the tokenizer to save there."""
    from open_clip.tokenizer import HFTokenizer

    from harness.tasks.lit_zeroshot import LitZeroShotConfig, text_pipeline

    model, cfg = _small_open_clip("ViT-B-16-SigLIP", monkeypatch, seed=7)
    folder = _save_open_clip(model, cfg, tmp_path / "oc")
    tower = text.load_text_tower(str(folder))
    assert tower.config["text_pp"] == "open_clip" and tower.config["hf_tokenizer_name"] == "timm/ViT-B-16-SigLIP"
    with pytest.raises(HarnessError, match="timm/ViT-B-16-SigLIP, which the folder does not hold"):
        text_pipeline(LitZeroShotConfig(), tower)

    texts = ["a photo of a golden_retriever.", "A Photo Of The RED circle!", "itap of a {}", "",
             "the large green square next to the small blue triangle on grass"]
    _siglip_tokenizer_folder(folder, ["a photo of the", "golden retriever red circle green square", "itap of",
                                      "large small blue triangle next to on grass"])
    tower = text.load_text_tower(str(folder))
    tokenizer, pp = text_pipeline(LitZeroShotConfig(), tower)
    assert pp.family == "open_clip" and pp.max_len == 8 and pp.pad_id == 1  # SiglipTokenizer: "</s>"
    ours = tokenize_pp(tokenizer, texts, pp)
    theirs = HFTokenizer(str(folder), context_length=8, clean="canonicalize")(texts).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[:, -1] == 1).all()  # every row ends in EOS: padded with it, or truncated keeping it
    with torch.no_grad():
        want = model.encode_text(torch.from_numpy(theirs), normalize=True).numpy()
    _close("open_clip encode_text of its own tokens", text.embed_texts(tower, tokenizer, pp, texts), want)
    # big_vision's rule (no cleaning but ASCII lower-casing) on the same folder gives other ids where
    # open_clip's cleaning changes the text within the tower's 8 tokens
    short = ["a?", "a"]
    bv = tokenize_pp(tokenizer, short, text_pp_for("big_vision", tokenizer, 8))
    oc = HFTokenizer(str(folder), context_length=8, clean="canonicalize")(short).numpy()
    assert not np.array_equal(bv[0], oc[0]) and np.array_equal(bv[1], oc[1])


# ------------------------------------------------------------------------------------------ refusals
def _run_cli_one_line(ckpt) -> str:
    r = CliRunner().invoke(main, ["run", "--task", "fewshot", "--ckpt", str(ckpt), "--out", str(Path(ckpt).parent)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def _tiny(arch, **kw):
    return timm.create_model(arch, pretrained=False, img_size=32, patch_size=8, embed_dim=48, depth=1,
                             **{"num_classes": 0, **kw})


@pytest.mark.parametrize("arch,kw,match", [
    ("vit_so150m_patch16_reg4_gap_256", dict(num_heads=4), r"register tokens \(reg_tokens=4\)"),  # the table
    ("vit_base_patch16_224", dict(init_values=1e-5), r"layer scale \(init_values\) \(tensor blocks.0.ls1.gamma\)"),
    ("vit_base_patch16_224", dict(reg_tokens=2), r"register tokens \(reg_tokens\) \(tensor reg_token\)"),
    ("vit_base_patch16_clip_224", {}, r"pre_norm"),
    ("vit_base_patch16_224", dict(global_pool="avg", fc_norm=True), r"fc_norm"),
    ("vit_base_patch16_224", dict(act_layer="quick_gelu"), r"act_layer='quick_gelu'"),
    ("vit_base_patch16_224", dict(qk_norm=True), r"qk_norm"),
    ("vit_base_patch16_224", dict(global_pool="avg", fc_norm=False), r"global_pool='avg' beside a class token"),
])
def test_unsupported_timm_models_are_refused_in_one_line(arch, kw, match, tmp_path):
    folder = _save_timm(_tiny(arch, **kw), tmp_path / "m")
    with pytest.raises(HarnessError, match=match):
        load_encoder(str(folder))
    line = _run_cli_one_line(folder)
    assert "refused rather than loaded approximately" in line


def test_other_refusals(tmp_path, monkeypatch):
    import safetensors.torch

    model = _tiny("vit_base_patch16_224")
    # A bare file whose name is no architecture, a pickled torch file, an architecture outside the table.
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    assert "does not say its architecture" in _run_cli_one_line(tmp_path / "model.safetensors")
    torch.save(model.state_dict(), tmp_path / "model.pth")
    assert "pickled PyTorch weights are never loaded" in _run_cli_one_line(tmp_path / "model.pth")
    folder = _save_timm(model, tmp_path / "renamed")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architecture": "vit_wonder_patch8"}))
    assert "is not in the harness's table of timm ViTs" in _run_cli_one_line(folder)
    (folder / "model.safetensors").unlink()
    assert "only pickled pytorch_model.bin" in _run_cli_one_line(folder)

    # open_clip text towers the harness's (big_vision's) text tower does not compute.
    oc, cfg = _small_open_clip("ViT-B-16-SigLIP", monkeypatch, seed=7)
    for i, (change, match) in enumerate([({"quick_gelu": True}, "QuickGELU"),
                                         ({"text_cfg": {**cfg["text_cfg"], "no_causal_mask": False}}, "causal"),
                                         ({"text_cfg": {**cfg["text_cfg"], "pool_type": "argmax"}}, "argmax"),
                                         ({"text_cfg": {**cfg["text_cfg"], "norm_kwargs": {}}}, "eps")]):
        folder = _save_open_clip(oc, {**cfg, **change}, tmp_path / f"oc{i}")
        load_encoder(str(folder))  # the image trunk is fine
        with pytest.raises(HarnessError, match=match):
            text.load_text_tower(str(folder))


# --------------------------------------------------------------------------------- the table is timm's
@pytest.mark.heavy
def test_arch_table_is_timms():
    """Every row of `TIMM_VIT` / `TIMM_VIT_REFUSED` rebuilt from the installed timm's own definitions."""
    spec = importlib.util.spec_from_file_location(
        "make_timm_arch_table", Path(__file__).parent / "data" / "make_timm_arch_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ok, refused = mod.table()
    assert ok == TIMM_VIT
    assert refused == TIMM_VIT_REFUSED


def test_print_measured_errors():
    """Runs last: the largest error of each comparison above (pytest -s shows them)."""
    for k, v in sorted(MEASURED.items()):
        print(f"{k}: {v:.2g}")
