"""Tokenizer on sentencepiece models trained here on a few lines of text."""

import io

import numpy as np
import pytest

spm = pytest.importorskip("sentencepiece")

from harness.data.tokenizer import Tokenizer  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

LINES = [
    "a red circle on a striped background",
    "two blue squares and a yellow cross",
    "the quick brown fox jumps over the lazy dog",
    "a photo of a small cat",
    "what colour is the large shape",
    "un café près de la fenêtre",
] * 10


def _train(path, **special_ids):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(LINES), model_writer=model,
                                   vocab_size=60, hard_vocab_limit=False, minloglevel=2,
                                   character_coverage=1.0, **special_ids)
    path.write_bytes(model.getvalue())
    return Tokenizer(path)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # T5 / big_vision convention: pad 0, eos 1, unk 2, no bos.
    return _train(tmp_path_factory.mktemp("spm") / "t5.model",
                  pad_id=0, eos_id=1, unk_id=2, bos_id=-1)


def _pieces(tok, text):
    """Ids of `text` without EOS or padding, via the tokenizer itself with room to spare."""
    row = tok.encode([text], 64, eos="no", lower=False)[0]
    return [int(t) for t in row if t != tok.pad_id]


def test_special_ids(tok):
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, -1)
    assert tok.vocab_size > 10


def test_round_trip(tok):
    texts = ["a red circle", "the lazy dog jumps over two blue squares", "what shape"]
    ids = tok.encode(texts, 32)
    assert ids.dtype == np.int32 and ids.shape == (3, 32)
    assert tok.decode(ids) == texts
    assert tok.decode(ids[1]) == [texts[1]]  # one sequence


def test_padding_after_eos(tok):
    ids = tok.encode(["a cat"], 16)[0]
    n = len(_pieces(tok, "a cat"))
    assert ids[n] == tok.eos_id
    assert (ids[n + 1:] == tok.pad_id).all() and (ids[:n] != tok.pad_id).all()


def test_sticky_eos_keeps_eos_on_truncation(tok):
    text = "the quick brown fox jumps over the lazy dog"
    pieces = _pieces(tok, text)
    n = len(pieces)
    assert n > 6
    # Truncated: "yes" loses the EOS, "sticky" replaces the last kept token by it.
    np.testing.assert_array_equal(tok.encode([text], 5, eos="yes")[0], pieces[:5])
    np.testing.assert_array_equal(tok.encode([text], 5, eos="sticky")[0],
                                  pieces[:4] + [tok.eos_id])
    np.testing.assert_array_equal(tok.encode([text], 5, eos="no")[0], pieces[:5])
    # Exactly fits with its EOS: both modes agree.
    np.testing.assert_array_equal(tok.encode([text], n + 1, eos="sticky"),
                                  tok.encode([text], n + 1, eos="yes"))
    # One token too long: big_vision's examples "aaa" -> [2, 2, 1] (sticky) vs [2, 2, 2] (yes).
    assert tok.encode([text], n, eos="sticky")[0, -1] == tok.eos_id
    assert tok.encode([text], n, eos="yes")[0, -1] == pieces[-1]
    # Short text: sticky and yes are the same.
    np.testing.assert_array_equal(tok.encode(["a cat"], 8, eos="sticky"),
                                  tok.encode(["a cat"], 8, eos="yes"))
    assert tok.eos_id not in tok.encode(["a cat"], 8, eos="no")[0]
    assert (tok.encode(["a cat"], 8, eos="none") == tok.encode(["a cat"], 8, eos="no")).all()


def test_lower_casing_is_ascii_only(tok):
    np.testing.assert_array_equal(tok.encode(["A Red CIRCLE"], 12),
                                  tok.encode(["a red circle"], 12))
    assert not np.array_equal(tok.encode(["A Red CIRCLE"], 12, lower=False),
                              tok.encode(["a red circle"], 12, lower=False))
    # Like tf.strings.lower without an encoding: "É" is not lower-cased to "é".
    assert not np.array_equal(tok.encode(["CAFÉ"], 12), tok.encode(["café"], 12))
    assert tok.decode(tok.encode(["Café"], 12)) == ["café"]


def test_bytes_input_and_decode_stops_at_eos(tok):
    ids = tok.encode([b"a red circle"], 12)
    assert tok.decode(ids) == ["a red circle"]
    cat = _pieces(tok, "a cat")
    dog = _pieces(tok, "dog")
    row = cat + [tok.eos_id] + dog + [0, 0]
    assert tok.decode(np.array([row])) == ["a cat"]
    assert tok.decode([cat + [0, 0]]) == ["a cat"]


def test_default_sentencepiece_convention(tmp_path):
    # Default training: unk 0, bos 1, eos 2 and no "<pad>" piece, so pad falls back to unk = 0,
    # which is what big_vision's pad_value="<pad>" gives for such models.
    tok = _train(tmp_path / "default.model")
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    ids = tok.encode(["a cat"], 10)
    assert ids[0, -1] == 0 and tok.eos_id in ids[0]
    assert tok.decode(ids) == ["a cat"]
    with_bos = tok.encode(["a cat"], 10, add_bos=True)
    assert with_bos[0, 0] == tok.bos_id and tok.decode(with_bos) == ["a cat"]


def test_missing_and_corrupt_model_files(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(HarnessError, match=str(missing)):
        Tokenizer(missing)
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00not a sentencepiece model" * 10)
    with pytest.raises(HarnessError, match="corrupt.model"):
        Tokenizer(corrupt)


def test_bad_arguments(tok):
    with pytest.raises(HarnessError, match="eos="):
        tok.encode(["a"], 4, eos="always")
    with pytest.raises(HarnessError, match="max_len"):
        tok.encode(["a"], 0)
    with pytest.raises(HarnessError, match="list of texts"):
        tok.encode("a cat", 4)
    with pytest.raises(HarnessError, match="no BOS"):
        tok.encode(["a"], 4, add_bos=True)


def test_pad_id_pads_after_the_eos(tok):
    # big_vision's pad_value=1 with a T5-style model: EOS, then EOS padding ("a" -> [2, 1, 1]).
    ids = tok.encode(["a cat"], 10, pad_id=tok.eos_id)[0]
    n = len(_pieces(tok, "a cat"))
    assert (ids[n:] == tok.eos_id).all() and (ids[:n] != tok.eos_id).all()
    np.testing.assert_array_equal(tok.encode(["a cat"], 10, pad_id=tok.pad_id), tok.encode(["a cat"], 10))
    assert (tok.encode(["a cat"], 10, eos="no", pad_id=7)[0, n:] == 7).all()
