"""Re-creates `harness/assets/proxy_spm.model`, the tokenizer of the offline proxy tasks.

    .venv/bin/python scripts/make_proxy_spm.py            # writes harness/assets/proxy_spm.{model,vocab}
    .venv/bin/python scripts/make_proxy_spm.py --check    # exit 1 if the shipped model would change

A BPE sentencepiece model trained on all text of `proxy_scenes` pretrain + train (class names,
captions, questions, annotator answers; default config, seed 0). Ids: pad=0, eos=1, unk=2, no bos.
Normalisation `nmt_nfkc_cf` (NFKC + case folding), so text is lower-cased by the model itself.
The proxy text has only ~120 distinct words, so BPE stops once every word is one piece (~560 pieces,
below the requested 1000; `hard_vocab_limit=False` allows that). One thread and the input in a fixed
order make training deterministic: the same sentencepiece version writes the same bytes.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL_PATH = REPO / "harness" / "assets" / "proxy_spm.model"
VOCAB_SIZE = 1000


def train_proxy_spm() -> bytes:
    """The serialized sentencepiece model proto."""
    import sentencepiece as spm

    sys.path.insert(0, str(REPO))
    from harness.data.builders.proxy_scenes import iter_text

    lines = list(iter_text(seed=0, sizes={"pretrain": 6000, "train": 1000}))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc_cf",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


def vocab_text(model_proto: bytes) -> str:
    """The `.vocab` companion file: one `piece<TAB>score` line per id."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the shipped model instead of writing it")
    args = parser.parse_args()
    proto = train_proxy_spm()
    if args.check:
        same = MODEL_PATH.exists() and MODEL_PATH.read_bytes() == proto
        print(f"{MODEL_PATH}: {'up to date' if same else 'DIFFERS from a fresh training run'}")
        return 0 if same else 1
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    MODEL_PATH.write_bytes(proto)
    MODEL_PATH.with_suffix(".vocab").write_text(vocab_text(proto), encoding="utf-8")
    print(f"wrote {MODEL_PATH} ({len(proto)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
