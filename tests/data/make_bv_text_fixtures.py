"""Writes tests/data/bv_text/: token ids from big_vision's own `tokenize` pp op.

Not part of the harness and not run by the tests: it needs big_vision,
TensorFlow and tensorflow_text, which the harness does not depend on, so it
runs in a scratch virtualenv (see tests/data/README.md). It holds no
big_vision code, only builds big_vision's pp ops by their pp strings:

    tokenize(max_len=16, model=<spm>, eos="sticky", pad_value=1, inkey="texts")

the SigLIP / LiT zero-shot and retrieval text pp of
`configs/proj/image_text/common.py::get_coco` and
`evaluators/proj/image_text/discriminative_classifier.py` (there with the
c4_en model; here with our own sentencepiece models), plus the same op with
its default `pad_value="<pad>"`, on the prompts and corner-case texts of
make_hf_siglip_fixtures.py, for two models:

- `proxy`: harness/assets/proxy_spm.model (the proxy tasks' BPE model; it
  case-folds itself);
- `hf_spm`: tests/data/hf_siglip/two_tower_spm/spiece.model (case-sensitive,
  T5's ids; the HF fixture's tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MAX_LEN = 16
MODELS = {
    "proxy": os.path.join(REPO, "harness", "assets", "proxy_spm.model"),
    "hf_spm": os.path.join(HERE, "hf_siglip", "two_tower_spm", "spiece.model"),
}
# name -> pp string template ({model} = the .model path).
PPS = {
    "siglip": 'tokenize(max_len=%d, model="{model}", eos="sticky", pad_value=1, inkey="texts")' % MAX_LEN,
    "default_pad": 'tokenize(max_len=%d, model="{model}", eos="sticky", inkey="texts")' % MAX_LEN,
}


def texts() -> dict[str, list[str]]:
    sys.path.insert(0, HERE)
    from make_hf_siglip_fixtures import (  # our script; no torch at import time
        EDGE_TEXTS,
        PROMPTS,
    )

    return {"prompts": PROMPTS, "edge": EDGE_TEXTS}


def run_pp(pp_string: str, batch: list[str]) -> np.ndarray:
    """big_vision's pp function applied to one {"texts": scalar string} at a time, as its evaluators
    map it over their text datasets."""
    import tensorflow as tf
    from big_vision.pp import builder as pp_builder
    from big_vision.pp import ops_text  # noqa: F401  (registers tokenize)

    fn = pp_builder.get_preprocess_fn(pp_string)
    return np.stack([fn({"texts": tf.constant(t)})["labels"].numpy() for t in batch]).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "bv_text"))
    parser.add_argument("--big_vision", default="/tmp/bv/big_vision", help="a big_vision checkout")
    args = parser.parse_args()
    sys.path.insert(0, args.big_vision)
    import subprocess

    import sentencepiece
    import tensorflow as tf
    import tensorflow_text

    os.makedirs(args.out, exist_ok=True)
    groups = texts()
    arrays = {}
    for model_name, model_path in MODELS.items():
        for pp_name, template in PPS.items():
            for group, batch in groups.items():
                arrays[f"{model_name}/{pp_name}/{group}"] = run_pp(template.format(model=model_path), batch)
    np.savez(os.path.join(args.out, "tokenize.npz"), **arrays)
    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {
        "big_vision_commit": commit, "tensorflow": tf.__version__,
        "tensorflow_text": tensorflow_text.__version__, "sentencepiece": sentencepiece.__version__,
        "max_len": MAX_LEN, "pp": PPS,
        "models": {k: os.path.relpath(v, REPO) for k, v in MODELS.items()},
        "texts": groups,
        "arrays": {k: f"{v.dtype}{list(v.shape)}" for k, v in arrays.items()},
    }
    with open(os.path.join(args.out, "tokenize.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    for k, v in arrays.items():
        print(k, v.shape)


if __name__ == "__main__":
    main()
