"""Writes the Hugging Face side of tests/data/siglip2/: tiny SigLIP 2 folders and transformers' own outputs.

Not part of the harness and not run by the tests: it needs torch and transformers (5.24.0, the version CI
installs for the optional tests), which the harness does not depend on. It holds no transformers code, only
calls into it. Run it first; make_bv_siglip2_fixtures.py reads the vocabulary and the images it writes.

1. `hf_fixed/tokenizer.model`: a small sentencepiece BPE model trained here on CLIP-prompt sentences, laid out
   as Gemma's (pad 0 `<pad>`, eos 1 `<eos>`, bos 2 `<bos>`, unk 3 `<unk>`, `<mask>`, byte fallback, split
   digits, no dummy prefix, no whitespace cleaning, identity normaliser), cased as Gemma's is.
2. Its transformers tokenizer as transformers' convert_siglip2_to_hf.py makes SigLIP 2's (`GemmaTokenizerFast`
   with add_bos_token=False, add_eos_token=True, padding_side="right", model_input_names=["input_ids"]),
   here `GemmaTokenizer.from_pretrained` of a folder holding that model (5.x converts it to tokenizer.json).
3. `hf_fixed/`: a tiny fixed-resolution SigLIP 2 (`SiglipModel`: 16 px images, patch 4, MAP head; text tower
   64 tokens long, the Gemma-style vocabulary) + `SiglipProcessor` (SiglipImageProcessor, the tokenizer),
   saved with save_pretrained, plus the sentencepiece `tokenizer.model` (as the hub's SigLIP 2 folders
   carry it); `hf_naflex/`: a tiny NaFlex SigLIP 2 (`Siglip2Model`: patch 4, a 4 x 4 posemb grid) +
   `Siglip2Processor` (Siglip2ImageProcessor with max_num_patches=24), saved with save_pretrained (5.x
   writes only tokenizer.json, so this folder exercises the tokenizer.json path). Every parameter is
   perturbed (+0.02 N(0, 1); torch seeded with 0 before each model is built); logit_scale = log 10,
   logit_bias = -10.
4. `hf_io.npz` / `hf_io.json`: transformers' outputs (eager attention, eval mode, no text attention mask):
   - fixed: `fixed_images` [2, 16, 16, 3] in [-1, 1] -> `fixed_image_embeds` (`get_image_features`, before the L2
     normalisation), `fixed_image_pooler` (the vision model's pooler_output: the same);
   - texts: `TEXTS` (below; in hf_io.json) through each folder's AutoProcessor as HF's zero-shot pipeline
     calls it (padding="max_length", max_length=64, truncation=True) -> `fixed_proc_ids`, `naflex_proc_ids`;
     `random_ids` [3, 64] uniform over the vocabulary; each id set's `<folder>_<ids>_text_embeds`
     (`get_text_features`, unnormalised);
     `<folder>_logits_per_image` for `random_ids`;
   - NaFlex: the uint8 images `naflex_image_<i>` (odd aspect ratios) through the folder's processor ->
     `naflex_pixel_values` [N, 24, 48], `naflex_pixel_attention_mask` [N, 24], `naflex_spatial_shapes` [N, 2],
     and the model's `naflex_image_embeds`, `naflex_image_pooler`, `naflex_last_hidden_state`;
   - `grid_sizes` [K, 2] image sizes and `grid_<p>_<n>` [K, 2]: the patch grids Siglip2ImageProcessor resizes
     them to for patch p and budget n (from `spatial_shapes` of a zero image of that size).

    python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch==2.14.1 transformers==5.24.0 sentencepiece
    /tmp/hfenv/bin/python tests/data/make_siglip2_fixtures.py
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "siglip2")
SEED = 0
PERTURB = 0.02
TEXT_LEN = 64  # SigLIP 2's text length (big_vision SigLIP2_demo.ipynb SEQLEN)
PATCH = 4
NAFLEX_BUDGET = 24  # max_num_patches of the tiny NaFlex processor (not a square: 24 = 4 x 6 = 2 x 12 ...)
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=PATCH,
              hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=TEXT_LEN, projection_size=32, hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2)
CLASSES = ["tench", "goldfish", "great white shark", "King Penguin", "English springer", "cassette player",
           "chain saw", "church", "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
           "Zürich tram", "café au lait", "2 dogs", "10 cats"]
TEMPLATES = ["a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a rendering of a {}.",
             "graffiti of a {}.", "a tattoo of a {}.", "the embroidered {}.", "itap of a {}.", "a toy {}.",
             "a photo of the small {}.", "art of the {}.", "a {} in a video game.", "{}"]
# The texts whose ids and embeddings are compared: prompts as the evaluators write them, and corner cases.
TEXTS = [
    "a photo of a tench.", "A Photo Of A King Penguin!", "itap of a great white shark", "a toy café au lait",
    "Zürich ÉCOLE İstanbul", "a photo of 2 dogs and 10 cats", "a  photo\twith\nwhitespace ", "",
    "a photo of a <eos> token and <pad>", "UPPER CASE ONLY", "ümlaut Ünder ß",
    " ".join(["a very long caption about a golf ball on a parachute"] * 6),
]
# Odd aspect ratios (H, W) for the NaFlex images, and sizes whose patch grids are recorded.
NAFLEX_SIZES = [(23, 61), (50, 17), (16, 16), (9, 100), (40, 40)]
GRID_SIZES = [(23, 61), (50, 17), (16, 16), (9, 100), (40, 40), (1, 1000), (1000, 1), (375, 500), (500, 375),
              (480, 640), (224, 224), (333, 777), (1080, 1920), (7, 13), (100, 3)]
GRID_CASES = [(4, 24), (16, 256), (14, 256), (16, 1024), (16, 64)]


def train_vocabulary(path: str) -> None:
    import sentencepiece as spm

    corpus = [t.format(c) for c in CLASSES for t in TEMPLATES] + TEXTS
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=420, model_type="bpe", pad_id=0, eos_id=1,
        bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>"], byte_fallback=True, split_digits=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())


def gemma_tokenizer(model_path: str):
    """SigLIP 2's tokenizer settings (transformers convert_siglip2_to_hf.py `get_siglip2_tokenizer`)."""
    from transformers import GemmaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(model_path, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": True,
                       "padding_side": "right", "model_input_names": ["input_ids"]}, f)
        tok = GemmaTokenizer.from_pretrained(tmp)
        tok.init_kwargs.pop("vocab_file", None)  # the temporary path, not a file of the saved folder
        return tok


def seeded(make):
    """`make()` (a model built and initialised by transformers) with torch's generator seeded first."""
    import torch

    torch.manual_seed(SEED)
    return make()


def perturbed(model):
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.add_(PERTURB * torch.randn_like(param))
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model.eval()


def text_embeds(model, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))).pooler_output.numpy()


def main() -> None:
    import torch
    import transformers
    from transformers import (
        AutoProcessor,
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        Siglip2Processor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    shutil.rmtree(OUT, ignore_errors=True)
    fixed_dir, naflex_dir = os.path.join(OUT, "hf_fixed"), os.path.join(OUT, "hf_naflex")
    os.makedirs(fixed_dir)
    spm_path = os.path.join(fixed_dir, "tokenizer.model")
    train_vocabulary(spm_path)
    tok = gemma_tokenizer(spm_path)
    vocab = len(tok)
    text = {**TEXT, "vocab_size": vocab}

    fixed = perturbed(seeded(lambda: SiglipModel(SiglipConfig(text_config=text,
                                                              vision_config={**VISION, "image_size": 16}))))
    fixed.save_pretrained(fixed_dir)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 16, "width": 16}),
                    tokenizer=tok).save_pretrained(fixed_dir)
    naflex = perturbed(seeded(lambda: Siglip2Model(Siglip2Config(text_config=text,
                                                                vision_config={**VISION, "num_patches": 16}))))
    naflex.save_pretrained(naflex_dir)
    Siglip2Processor(image_processor=Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=NAFLEX_BUDGET),
                     tokenizer=tok).save_pretrained(naflex_dir)
    assert not os.path.exists(os.path.join(naflex_dir, "tokenizer.model")), os.listdir(naflex_dir)
    for d in (fixed_dir, naflex_dir):
        assert not [f for f in os.listdir(d) if f.endswith((".bin", ".pt", ".pth"))], os.listdir(d)

    # Reloaded as a user loads them.
    fixed = SiglipModel.from_pretrained(fixed_dir, attn_implementation="eager").eval()
    naflex = Siglip2Model.from_pretrained(naflex_dir, attn_implementation="eager").eval()
    fixed_proc, naflex_proc = AutoProcessor.from_pretrained(fixed_dir), AutoProcessor.from_pretrained(naflex_dir)
    rng = np.random.default_rng(SEED)
    arrays: dict[str, np.ndarray] = {}

    images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        pv = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        arrays["fixed_images"] = images
        arrays["fixed_image_embeds"] = fixed.get_image_features(pixel_values=pv).pooler_output.numpy()
        arrays["fixed_image_pooler"] = fixed.vision_model(pixel_values=pv).pooler_output.numpy()

    call = dict(padding="max_length", max_length=TEXT_LEN, truncation=True)  # HF's zero-shot pipeline, SigLIP
    ids = {"random": rng.integers(0, vocab, (3, TEXT_LEN)).astype(np.int32),
           "fixed_proc": np.asarray(fixed_proc(text=TEXTS, **call)["input_ids"], np.int32),
           "naflex_proc": np.asarray(naflex_proc(text=TEXTS, **call)["input_ids"], np.int32)}
    arrays.update({f"{k}_ids": v for k, v in ids.items()})
    for name, model in (("fixed", fixed), ("naflex", naflex)):
        for k, v in ids.items():
            arrays[f"{name}_{k}_text_embeds"] = text_embeds(model, v)

    raw = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in NAFLEX_SIZES]
    for i, img in enumerate(raw):
        arrays[f"naflex_image_{i}"] = img
    # The image processor itself: Siglip2Processor's own `images_kwargs` defaults (patch 16, 256 patches) would
    # override the tiny image processor's settings (processing_siglip2.py).
    batch = naflex_proc.image_processor(raw, return_tensors="pt", input_data_format="channels_last")
    with torch.no_grad():
        kw = dict(pixel_values=batch["pixel_values"], pixel_attention_mask=batch["pixel_attention_mask"],
                  spatial_shapes=batch["spatial_shapes"])
        vision = naflex.vision_model(**kw)
        arrays["naflex_image_embeds"] = naflex.get_image_features(**kw).pooler_output.numpy()
        arrays["naflex_image_pooler"] = vision.pooler_output.numpy()
        arrays["naflex_last_hidden_state"] = vision.last_hidden_state.numpy()
        for name, model, inputs in (("fixed", fixed, dict(pixel_values=pv)), ("naflex", naflex, kw)):
            out = model(input_ids=torch.from_numpy(ids["random"].astype(np.int64)), **inputs)
            arrays[f"{name}_logits_per_image"] = out.logits_per_image.numpy()
    arrays["naflex_pixel_values"] = batch["pixel_values"].numpy()
    arrays["naflex_pixel_attention_mask"] = batch["pixel_attention_mask"].numpy().astype(np.int32)
    arrays["naflex_spatial_shapes"] = batch["spatial_shapes"].numpy().astype(np.int32)

    arrays["grid_sizes"] = np.asarray(GRID_SIZES, np.int32)
    for p, n in GRID_CASES:
        proc = Siglip2ImageProcessor(patch_size=p, max_num_patches=n)
        arrays[f"grid_{p}_{n}"] = np.stack([
            proc(images=np.zeros((*hw, 3), np.uint8), return_tensors="np", input_data_format="channels_last")["spatial_shapes"][0]
            for hw in GRID_SIZES]).astype(np.int32)

    np.savez(os.path.join(OUT, "hf_io.npz"), **arrays)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "seed": SEED, "perturb": PERTURB, "text_len": TEXT_LEN, "vocab_size": vocab, "vision": VISION,
            "text": text, "naflex_budget": NAFLEX_BUDGET, "naflex_sizes": NAFLEX_SIZES, "texts": TEXTS,
            "grid_cases": GRID_CASES, "tokenizer_classes": {"fixed": type(fixed_proc.tokenizer).__name__,
                                                             "naflex": type(naflex_proc.tokenizer).__name__},
            "files": {d: sorted(os.listdir(os.path.join(OUT, d))) for d in ("hf_fixed", "hf_naflex")},
            "arrays": {k: f"{v.dtype}{list(v.shape)}" for k, v in sorted(arrays.items())}}
    with open(os.path.join(OUT, "hf_io.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(meta["tokenizer_classes"]), meta["files"])


if __name__ == "__main__":
    main()
