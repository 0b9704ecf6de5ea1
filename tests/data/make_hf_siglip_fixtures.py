"""Writes the Hugging Face SigLIP fixtures in tests/data/hf_siglip/.

Not part of the harness and not run by the tests: it needs torch and
transformers, which the harness does not depend on, so it runs in a scratch
virtualenv (see tests/data/README.md). It holds no transformers code, only
calls into it.

Default mode (transformers 5.x): a tiny randomly initialised `SiglipModel`,
perturbed so that no bias is zero and no LayerNorm is the identity, saved with
`save_pretrained` to two_tower/, its vision tower saved as a
`SiglipVisionModel` to vision/, and the reference outputs of both folders,
reloaded with `from_pretrained`, to io.npz.

`--legacy_vision` mode (transformers 4.x): reloads two_tower/ and saves its
vision tower as a `SiglipVisionModel` again, which 4.x writes with a
`vision_model.` key prefix (5.x writes none), then checks that folder
reproduces the vision outputs in io.npz.

`--text_pp` mode (transformers 5.x): a second tiny `SiglipModel` whose text
tower covers a small sentencepiece model trained here (case-sensitive, T5's
ids: pad 0, eos 1, unk 2), saved with `save_pretrained` next to that model and
a `SiglipProcessor`'s tokenizer / image-processor files in two_tower_spm/; then
`SiglipProcessor(text=PROMPTS, padding="max_length", truncation=True)` on real
CLIP-template prompts and the text embeddings `SiglipModel` computes from those
tokens go to text_pp_io.npz (+ text_pp.json). The other folders are untouched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import numpy as np

BATCH = 2
TEXT_LENGTH = 8
PERTURB_STDDEV = 0.02
SEED = 0
# SigLIP's own initial temperature and bias (paper: t' = log 10, b = -10), so
# that logits_per_image has a realistic scale and a non-zero bias.
LOGIT_SCALE = math.log(10.0)
LOGIT_BIAS = -10.0

VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, image_size=16, patch_size=4)
# Special-token ids inside the tiny vocabulary (the defaults are CLIP's ids,
# 49406/49407, which transformers warns about); the forward pass ignores them.
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, vocab_size=64, max_position_embeddings=8,
            pad_token_id=1, bos_token_id=62, eos_token_id=63)


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    """NHWC float32 images in [-1, 1] and int32 token ids, from one seed."""
    rng = np.random.default_rng(SEED)
    size = VISION["image_size"]
    images = rng.uniform(-1.0, 1.0, (BATCH, size, size, 3)).astype(np.float32)
    input_ids = rng.integers(0, TEXT["vocab_size"], (BATCH, TEXT_LENGTH),
                             dtype=np.int32)
    return images, input_ids


def to_pixel_values(images: np.ndarray) -> Any:
    """NHWC numpy -> NCHW torch, the layout HF's Conv2d expects."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def vision_state_for(vision_model: Any, tower_state: dict[str, Any]
                     ) -> dict[str, Any]:
    """Renames the two-tower model's vision keys to a SiglipVisionModel's.

    transformers 4.x nests the tower under `vision_model.` inside
    SiglipVisionModel; 5.x does not. Reading the target's own keys keeps
    this script working on both.
    """
    nested = all(k.startswith("vision_model.")
                 for k in vision_model.state_dict())
    prefix = "vision_model." if nested else ""
    return {prefix + k: v for k, v in tower_state.items()}


def save_vision_tower(two_tower: Any, path: str) -> None:
    """Saves the vision tower of a SiglipModel as a SiglipVisionModel folder."""
    from transformers import SiglipVisionModel

    vision = SiglipVisionModel(two_tower.config.vision_config)
    state = vision_state_for(vision, two_tower.vision_model.state_dict())
    missing, unexpected = vision.load_state_dict(state, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    vision.save_pretrained(path)


def check_safetensors_only(path: str) -> None:
    """The folders must hold config.json + model.safetensors, nothing pickled."""
    names = sorted(os.listdir(path))
    assert names == ["config.json", "model.safetensors"], names


def vision_outputs(path: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """last_hidden_state / pooler_output of a SiglipVisionModel folder."""
    import torch
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(
        path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(pixel_values=to_pixel_values(images))
    return {"last_hidden_state": out.last_hidden_state.numpy(),
            "pooler_output": out.pooler_output.numpy()}


def two_tower_outputs(path: str, images: np.ndarray, input_ids: np.ndarray,
                      attn_implementation: str = "eager"
                      ) -> dict[str, np.ndarray]:
    """Reference outputs of a SiglipModel folder (eval mode, no text mask)."""
    import torch
    from transformers import SiglipModel

    model = SiglipModel.from_pretrained(
        path, attn_implementation=attn_implementation).eval()
    ids = torch.from_numpy(input_ids.astype(np.int64))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=to_pixel_values(images))
    return {
        # Before the L2 normalisation that image_embeds/text_embeds carry.
        "image_pooler_output": out.vision_model_output.pooler_output.numpy(),
        "text_pooler_output": out.text_model_output.pooler_output.numpy(),
        "text_last_hidden_state":
            out.text_model_output.last_hidden_state.numpy(),
        "image_embeds": out.image_embeds.numpy(),
        "text_embeds": out.text_embeds.numpy(),
        "logits_per_image": out.logits_per_image.numpy(),
        "logit_scale": model.logit_scale.detach().numpy(),
        "logit_bias": model.logit_bias.detach().numpy(),
    }


def build(out_dir: str) -> None:
    """Default mode: model, folders and io.npz."""
    import torch
    import transformers
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(vision_config=VISION, text_config=TEXT)
    torch.manual_seed(SEED)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(PERTURB_STDDEV * torch.randn_like(param))
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)

    two_tower_dir = os.path.join(out_dir, "two_tower")
    vision_dir = os.path.join(out_dir, "vision")
    model.save_pretrained(two_tower_dir)
    save_vision_tower(model, vision_dir)
    for path in (two_tower_dir, vision_dir):
        check_safetensors_only(path)

    images, input_ids = make_inputs()
    vision = vision_outputs(vision_dir, images)
    both = two_tower_outputs(two_tower_dir, images, input_ids)
    # The vision folder is the two-tower model's own tower.
    np.testing.assert_array_equal(vision["pooler_output"],
                                  both["image_pooler_output"])
    # The default attention kernel (sdpa) agrees to float32 rounding.
    sdpa = two_tower_outputs(two_tower_dir, images, input_ids, "sdpa")
    sdpa_diff = {k: float(np.abs(sdpa[k] - both[k]).max()) for k in both}
    assert max(sdpa_diff.values()) < 1e-5, sdpa_diff

    arrays = {"images": images, "input_ids": input_ids, **vision, **both}
    np.savez(os.path.join(out_dir, "io.npz"),
             **{k: (v if k == "input_ids" else v.astype(np.float32))
                for k, v in arrays.items()})
    meta = {
        "transformers": transformers.__version__, "torch": torch.__version__,
        "seed": SEED, "perturb_stddev": PERTURB_STDDEV,
        "logit_scale": LOGIT_SCALE, "logit_bias": LOGIT_BIAS,
        "vision_config": VISION, "text_config": TEXT,
        "hidden_act": config.vision_config.hidden_act,
        "layer_norm_eps": config.vision_config.layer_norm_eps,
        "attn_implementation": "eager",
        "max_abs_diff_eager_vs_sdpa": sdpa_diff,
        "arrays": {k: f"{v.dtype}{list(v.shape)}" for k, v in
                   np.load(os.path.join(out_dir, "io.npz")).items()},
    }
    with open(os.path.join(out_dir, "io.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    for k, v in arrays.items():
        print(k, v.shape, v.dtype)


def build_legacy_vision(out_dir: str, legacy_dir: str) -> None:
    """transformers 4.x mode: re-export the vision tower, check its outputs."""
    import transformers
    from transformers import SiglipModel

    assert transformers.__version__.startswith("4."), transformers.__version__
    model = SiglipModel.from_pretrained(os.path.join(out_dir, "two_tower"))
    save_vision_tower(model, legacy_dir)
    check_safetensors_only(legacy_dir)
    io = np.load(os.path.join(out_dir, "io.npz"))
    got = vision_outputs(legacy_dir, io["images"])
    for k, v in got.items():
        diff = np.abs(v - io[k]).max()
        assert diff < 1e-6, (k, diff)
        print(k, "max abs diff vs io.npz", diff)


# ------------------------------------------------------------------ --text_pp
# Real zero-shot prompts: CLIP templates filled with ImageNet class names, with
# capitals, punctuation, a non-ASCII capital and letters the vocabulary lacks,
# repeated whitespace, and two longer than the tower's 16 tokens.
PROMPTS = [
    "a photo of a goldfish.",
    "a bad photo of the Great White Shark.",
    "itap of a tench",
    "a photo of the large kite (bird of prey).",
    "a low resolution photo of a Yorkshire Terrier!",
    "a sculpture of a red-breasted merganser.",
    "art of the toilet paper",
    "a close-up photo of a St. Bernard.",
    "a origami hen",
    "A Photo Of A Caf\u00e9 In Z\u00fcrich, \u00c9COLE.",
    "a black and white photo of the American alligator, Alligator "
    "mississippiensis, lying on a muddy river bank next to a small boat",
    "there are  two   dogs,\tplaying in the snow",
]
# Token ids only (no embeddings): corner cases of the tokenizer itself.
EDGE_TEXTS = [
    "", " ", "   leading and trailing   ", "???", "a dog</s>", "</s>",
    "a </s> dog", "a <unk> dog", "the \u2581 cat", "\u2581a dog", "a\nnewline",
    "UPPER CASE ONLY", "don't stop-believing", "x" * 40,
    "one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen",
]
SPM_VOCAB = 256
TEXT_PP_LENGTH = 16
TEXT_PP_SEED = 1
VISION_SPM = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=32, image_size=8, patch_size=4)
TEXT_SPM = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=32,
                max_position_embeddings=TEXT_PP_LENGTH,
                pad_token_id=1, bos_token_id=2, eos_token_id=1,
                projection_size=16)
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "harness", "assets")


def _asset_lines(name: str) -> list[str]:
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f
                if ln.strip() and not ln.startswith("#")]


def spm_corpus() -> list[str]:
    """CLIP's 80 templates x the first 40 CLIP ImageNet names, every 7th line
    title-cased (so capitals are in the vocabulary: a tokenizer that does not
    lower-case gets other ids, not just <unk>). No accented letters: they stay
    unknown."""
    names = _asset_lines("clip_imagenet_class_names.txt")[:40]
    lines = []
    for i, (t, n) in enumerate((t, n) for n in names
                               for t in _asset_lines("clip_paper_templates.txt")):
        line = t.replace("{}", n)
        lines.append(line.title() if i % 7 == 0 else line)
    return lines


def train_spm() -> bytes:
    """A unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos)
    and no case folding (identity normaliser), like c4_en. One thread and a
    fixed input order: deterministic."""
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(spm_corpus()), model_writer=out,
        model_type="unigram", vocab_size=SPM_VOCAB, hard_vocab_limit=False,
        normalization_rule_name="identity", character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        shuffle_input_sentence=False, minloglevel=2)
    return out.getvalue()


def build_text_pp(out_dir: str) -> None:
    """two_tower_spm/ (model + processor files) and text_pp_io.npz."""
    import tempfile

    import sentencepiece
    import torch
    import transformers
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    folder = os.path.join(out_dir, "two_tower_spm")
    with tempfile.TemporaryDirectory() as tmp:
        spm_path = os.path.join(tmp, "spiece.model")
        with open(spm_path, "wb") as f:
            f.write(train_spm())
        vocab = sentencepiece.SentencePieceProcessor(
            model_file=spm_path).get_piece_size()
        # model_input_names=["input_ids"]: the processor returns no attention
        # mask, so the text tower runs unmasked, as big_vision's does.
        tokenizer = SiglipTokenizer(vocab_file=spm_path,
                                    model_max_length=TEXT_PP_LENGTH,
                                    model_input_names=["input_ids"])
        image_processor = SiglipImageProcessor(
            size={"height": VISION_SPM["image_size"],
                  "width": VISION_SPM["image_size"]})
        SiglipProcessor(image_processor=image_processor,
                        tokenizer=tokenizer).save_pretrained(folder)

    config = SiglipConfig(vision_config=VISION_SPM,
                          text_config=dict(TEXT_SPM, vocab_size=vocab))
    torch.manual_seed(TEXT_PP_SEED)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(PERTURB_STDDEV * torch.randn_like(param))
        model.logit_scale.fill_(LOGIT_SCALE)
        model.logit_bias.fill_(LOGIT_BIAS)
    model.save_pretrained(folder)

    processor = SiglipProcessor.from_pretrained(folder)
    enc = processor(text=PROMPTS, padding="max_length", truncation=True,
                    return_tensors="pt")
    assert list(enc.keys()) == ["input_ids"], list(enc.keys())
    input_ids = enc["input_ids"]
    # Without truncation=True, padding="max_length" does not cut: a longer
    # text stays longer than the tower (HF's zero-shot pipeline passes
    # truncation=True for SigLIP).
    lengths = [len(r) for r in processor(text=PROMPTS, padding="max_length")[
        "input_ids"]]
    edge = processor(text=EDGE_TEXTS, padding="max_length", truncation=True,
                     return_tensors="pt")["input_ids"]

    reloaded = SiglipModel.from_pretrained(folder,
                                           attn_implementation="eager").eval()
    pixels = torch.zeros(1, 3, VISION_SPM["image_size"],
                         VISION_SPM["image_size"])
    with torch.no_grad():
        out = reloaded(input_ids=input_ids, pixel_values=pixels)
        sdpa = SiglipModel.from_pretrained(
            folder, attn_implementation="sdpa").eval()(
                input_ids=input_ids, pixel_values=pixels)
    sdpa_diff = float((sdpa.text_embeds - out.text_embeds).abs().max())
    assert sdpa_diff < 1e-5, sdpa_diff

    arrays = {
        "input_ids": input_ids.numpy().astype(np.int32),
        "text_pooler_output":
            out.text_model_output.pooler_output.numpy().astype(np.float32),
        "text_embeds": out.text_embeds.numpy().astype(np.float32),
        "edge_input_ids": edge.numpy().astype(np.int32),
    }
    np.savez(os.path.join(out_dir, "text_pp_io.npz"), **arrays)
    meta = {
        "transformers": transformers.__version__, "torch": torch.__version__,
        "sentencepiece": sentencepiece.__version__,
        "seed": TEXT_PP_SEED, "perturb_stddev": PERTURB_STDDEV,
        "vision_config": VISION_SPM, "text_config": dict(TEXT_SPM,
                                                         vocab_size=vocab),
        "spm_vocab_size": vocab,
        "processor_call": 'SiglipProcessor.from_pretrained(two_tower_spm)'
                          '(text=PROMPTS, padding="max_length", '
                          'truncation=True, return_tensors="pt")',
        "prompts": PROMPTS, "edge_texts": EDGE_TEXTS,
        "lengths_without_truncation": lengths,
        "attn_implementation": "eager",
        "max_abs_diff_eager_vs_sdpa": sdpa_diff,
        "files": sorted(os.listdir(folder)),
        "arrays": {k: f"{v.dtype}{list(v.shape)}" for k, v in arrays.items()},
    }
    with open(os.path.join(out_dir, "text_pp.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    for k, v in arrays.items():
        print(k, v.shape, v.dtype)
    print("lengths without truncation", lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "hf_siglip"))
    parser.add_argument("--legacy_vision", metavar="DIR", default=None,
                        help="transformers 4.x: write the vision tower here")
    parser.add_argument("--text_pp", action="store_true",
                        help="write two_tower_spm/ and text_pp_io.npz only")
    args = parser.parse_args()
    if args.legacy_vision:
        build_legacy_vision(args.out, args.legacy_vision)
    elif args.text_pp:
        build_text_pp(args.out)
    else:
        os.makedirs(args.out, exist_ok=True)
        build(args.out)


if __name__ == "__main__":
    main()
