"""pp ops against independent numpy computations, and pp-string parsing errors."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from harness.data.pp import (  # noqa: E402
    Preprocess,
    eval_pp,
    example_seed,
    known_ops,
    preprocess_numpy,
    side_before_crop,
)
from harness.errors import HarnessError  # noqa: E402


def _run(pp, image, seed=None, **extra):
    """One example through a pp; returns the numpy image."""
    data = {"image": tf.constant(image), **{k: tf.constant(v) for k, v in extra.items()}}
    return Preprocess(pp)(data, seed=seed)["image"].numpy()


def _coords_image(h, w):
    """Channel 0 = row, channel 1 = column, channel 2 = 7: a crop reveals its own offsets."""
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(h)[:, None]
    image[..., 1] = np.arange(w)[None, :]
    image[..., 2] = 7
    return image


def _bilinear_numpy(image, out_h, out_w, dtype=np.float64):
    """Bilinear resize with half-pixel centres and edge clamping (TF2, no antialias).

    With dtype=float32 it follows the float32 formula order of TF's kernel, so that values that
    are whole numbers in exact arithmetic truncate the same way.
    """

    def axis(out_n, in_n):
        scale = dtype(in_n) / dtype(out_n)
        src = (np.arange(out_n).astype(dtype) + dtype(0.5)) * scale - dtype(0.5)
        lo = np.floor(src)
        frac = (src - lo).astype(dtype)
        return (np.clip(lo, 0, in_n - 1).astype(int), np.clip(lo + 1, 0, in_n - 1).astype(int),
                frac)

    y0, y1, fy = axis(out_h, image.shape[0])
    x0, x1, fx = axis(out_w, image.shape[1])
    image = image.astype(dtype)
    fx = fx[None, :, None]
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx
    return top + (bottom - top) * fy[:, None, None]


# --------------------------------------------------------------------------------------------------
# value_range


def test_standard_eval_pp_strings():
    # big_vision's resize 256 / crop 224, scaled to other resolutions.
    assert [side_before_crop(r) for r in (224, 64, 384)] == [256, 73, 439]
    assert side_before_crop(518, 448, 384) == 604
    assert eval_pp(224, 256) == "decode|resize(256)|central_crop(224)|value_range(-1,1)"
    assert eval_pp(224, 256, resize_op="resize_small") == (
        "decode|resize_small(256)|central_crop(224)|value_range(-1,1)")
    assert eval_pp(64) == "decode|resize(64)|value_range(-1,1)"
    Preprocess(eval_pp(224, 256, resize_op="resize_small"))  # parses


def test_value_range_matches_numpy():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = _run("value_range(-1, 1)", image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, image.astype(np.float64) / 255 * 2 - 1, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1

    out = _run("value_range(0, 10, in_min=50, in_max=150, clip_values=True)", image)
    expected = np.clip((image.astype(np.float64) - 50) / 100 * 10, 0, 10)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_value_range_per_channel_input_range():
    image = np.full((2, 2, 3), 100, np.uint8)
    out = _run("value_range(0, 1, in_min=(0, 50, 100), in_max=(200, 150, 300))", image)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.5, 0.0], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# resize / resize_small


def test_resize_truncates_when_casting_back_to_uint8():
    # Upsampling [0, 255] to width 4 gives 0, 63.75, 191.25, 255: the reference truncates.
    image = np.array([[[0] * 3, [255] * 3]], np.uint8)
    out = _run("resize((1, 4))", image)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 63, 191, 255])


@pytest.mark.parametrize("out_hw", [(7, 11), (20, 30), (13, 5)])
def test_resize_is_bilinear_without_antialias(out_hw):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (13, 17, 3)).astype(np.float32)
    expected = _bilinear_numpy(image, *out_hw)
    # A float image keeps its dtype, so this checks the interpolation itself.
    np.testing.assert_allclose(_run(f"resize({out_hw})", image), expected, atol=1e-3)

    image_u8 = image.astype(np.uint8)
    out = _run(f"resize({out_hw})", image_u8).astype(int)
    expected = np.floor(_bilinear_numpy(image_u8, *out_hw, dtype=np.float32)).astype(int)
    np.testing.assert_array_equal(out, expected)  # truncated, not rounded


def test_resize_int_size_is_square_and_static():
    out = _run("resize(9)", np.zeros((4, 6, 3), np.uint8))
    assert out.shape == (9, 9, 3)


@pytest.mark.parametrize("in_hw, smaller, out_hw", [
    ((40, 30), 20, (27, 20)),   # portrait: width is the short side
    ((30, 40), 20, (20, 27)),   # landscape
    ((20, 25), 10, (10, 12)),   # 12.5 rounds half to even -> 12
    ((20, 35), 10, (10, 18)),   # 17.5 rounds half to even -> 18
    ((16, 16), 32, (32, 32)),   # upsampling too
])
def test_resize_small_shapes(in_hw, smaller, out_hw):
    out = _run(f"resize_small({smaller})", np.zeros((*in_hw, 3), np.uint8))
    assert out.shape == (*out_hw, 3)


def test_resize_small_uses_area_averaging():
    image = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = _run("resize_small(2)", image)
    blocks = image.reshape(2, 2, 3, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.floor(blocks).astype(np.uint8))


def test_resize_long_shape():
    assert _run("resize_long(20)", np.zeros((30, 40, 3), np.uint8)).shape == (15, 20, 3)


# --------------------------------------------------------------------------------------------------
# crops and flips


def test_central_crop_offsets():
    image = _coords_image(9, 12)
    out = _run("central_crop(4)", image)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[:, 0, 0], [2, 3, 4, 5])   # dy = (9 - 4) // 2
    np.testing.assert_array_equal(out[0, :, 1], [4, 5, 6, 7])   # dx = (12 - 4) // 2

    out = _run("central_crop((3, 5))", image)
    assert out[0, 0, 0] == 3 and out[0, 0, 1] == 3 and out.shape == (3, 5, 3)

    out = _run("central_crop", image)  # largest central square
    assert out.shape == (9, 9, 3) and out[0, 0, 1] == 1


def _window_of(crop, image_hw):
    """(top, left) of a crop of a _coords_image, checking it is one contiguous window."""
    top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
    h, w = crop.shape[:2]
    assert top + h <= image_hw[0] and left + w <= image_hw[1]
    window = _coords_image(*image_hw)[top:top + h, left:left + w]
    np.testing.assert_array_equal(crop, window)
    return top, left


def test_random_crop_is_a_window_and_depends_on_seed():
    image = _coords_image(30, 40)
    windows = {_window_of(_run("random_crop((5, 8))", image, seed=example_seed(0, i)), (30, 40))
               for i in range(10)}
    assert len(windows) > 5
    a = _run("random_crop(6)", image, seed=example_seed(3, 4))
    b = _run("random_crop(6)", image, seed=example_seed(3, 4))
    np.testing.assert_array_equal(a, b)


def test_inception_crop_deterministic_per_seed():
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a = preprocess_numpy("inception_crop(16)", [image] * 3, seed=5)
    b = preprocess_numpy("inception_crop(16)", [image] * 3, seed=5)
    c = preprocess_numpy("inception_crop(16)", [image] * 3, seed=6)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Images 0, 1, 2 have different per-example seeds: different crops of the same image.
    assert not np.array_equal(a[0], a[1])


def test_inception_crop_area_and_aspect_ranges():
    hw = (60, 80)
    image = _coords_image(*hw)
    for i in range(20):
        crop = _run("inception_crop(area_min=20, area_max=60)", image, seed=example_seed(0, i))
        _window_of(crop, hw)
        h, w = crop.shape[:2]
        area = h * w / (hw[0] * hw[1])
        assert 0.19 <= area <= 0.61, area
        assert 0.70 <= w / h <= 1.40, (h, w)  # 3/4..4/3, up to rounding to whole pixels


def test_flip_lr_flips_about_half_the_time():
    image = _coords_image(4, 6)
    flips = []
    for i in range(40):
        out = _run("flip_lr", image, seed=example_seed(0, i))
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
        flips.append(np.array_equal(out, image[:, ::-1]))
    assert 8 < sum(flips) < 32


def test_random_ops_in_one_pp_get_different_seeds():
    # If both flips drew the same coin they would always cancel out.
    image = _coords_image(4, 6)
    outs = [_run("flip_lr|flip_lr", image, seed=example_seed(0, i)) for i in range(20)]
    assert any(np.array_equal(o, image[:, ::-1]) for o in outs)


def test_random_ops_read_the_example_seed_key():
    image = _coords_image(30, 40)
    pp = Preprocess("random_crop(5)")
    a = pp({"image": tf.constant(image), "_seed": example_seed(1, 2)})
    assert "_seed" not in a
    b = pp({"image": tf.constant(image)}, seed=example_seed(1, 2))
    np.testing.assert_array_equal(a["image"], b["image"])


# --------------------------------------------------------------------------------------------------
# decode and the whole chain


def test_decode_roundtrips_png_in_preprocess_numpy():
    images = np.random.default_rng(4).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_numpy("decode", images), images)


def test_decode_jpeg_bytes():
    image = np.full((8, 8, 3), 120, np.uint8)
    jpeg = tf.io.encode_jpeg(tf.constant(image), quality=100)
    out = Preprocess("decode")({"image": jpeg})["image"].numpy()
    assert out.shape == (8, 8, 3) and np.abs(out.astype(int) - 120).max() <= 2


def test_fewshot_chain_matches_numpy_composition():
    image = np.random.default_rng(5).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = preprocess_numpy("decode|resize(8)|central_crop(6)|value_range(-1,1)", [image])[0]
    resized = np.floor(_bilinear_numpy(image, 8, 8, dtype=np.float32))
    expected = resized[1:7, 1:7] / 255 * 2 - 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# dict ops and keys


def test_keep_drop_copy():
    data = {"image": tf.constant(1), "label": tf.constant(2), "other": tf.constant(3)}
    assert set(Preprocess("keep('image', 'label')")(data)) == {"image", "label"}
    assert set(Preprocess('drop("other")')(data)) == {"image", "label"}
    out = Preprocess("copy('label', 'labels')")(data)
    assert int(out["labels"]) == 2 and int(out["label"]) == 2


def test_onehot_against_numpy():
    out = Preprocess("onehot(5)")({"label": tf.constant(3)})["label"].numpy()
    np.testing.assert_array_equal(out, np.eye(5)[3])

    out = Preprocess("onehot(4, key='y', key_result='y1', on=0.9, off=-1)")(
        {"y": tf.constant(1)})
    np.testing.assert_allclose(out["y1"], [-1, 0.9, -1, -1])
    assert int(out["y"]) == 1

    # A label set (ImageNet ReaL) becomes one multi-hot vector.
    out = Preprocess("onehot(6, key='real_label')")({"real_label": tf.constant([4, 1, 4])})
    np.testing.assert_array_equal(out["real_label"], [0, 1, 0, 0, 1, 0])


def test_keyed_ops_read_and_write_other_keys():
    image = np.full((2, 2, 3), 255, np.uint8)
    out = Preprocess("value_range(0, 1, key='x')|resize(3, inkey='x', outkey='y')")(
        {"x": tf.constant(image)})
    assert out["x"].dtype == tf.float32 and float(out["x"][0, 0, 0]) == 1.0
    assert out["y"].shape == (3, 3, 3)


def test_missing_key_is_a_clear_error():
    with pytest.raises(HarnessError, match="reads key 'image'.*'pixels'"):
        Preprocess("resize(3)")({"pixels": tf.zeros((2, 2, 3))})


# --------------------------------------------------------------------------------------------------
# parsing


def test_str_keeps_the_pp_string():
    spec = "decode|resize_small(256)|central_crop(224)|value_range(-1,1)"
    pp = Preprocess(spec)
    assert str(pp) == spec
    assert [op.name for op in pp.ops] == ["decode", "resize_small", "central_crop", "value_range"]
    assert pp.ops[3].args == (-1, 1)
    assert not pp.is_random and Preprocess("inception_crop(224)|flip_lr").is_random
    assert str(Preprocess(None)) == "" and Preprocess("")({"a": 1}) == {"a": 1}


def test_unknown_op_suggests_the_closest():
    with pytest.raises(HarnessError) as e:
        Preprocess("decode|resise(224)")
    message = str(e.value)
    assert "unknown pp op 'resise'" in message and "did you mean 'resize'" in message
    assert "central_crop" in message  # the list of known ops


@pytest.mark.parametrize("spec, fragment", [
    ("resize()", "missing a required argument: 'size'"),
    ("central_crop(1, 2, 3)", "too many positional arguments"),
    ("resize(224, colour=1)", "unexpected keyword argument 'colour'"),
    ("resize('big')", "size must be a positive int or a pair"),
    ("resize((1, 2, 3))", "size must be a positive int or a pair"),
    ("value_range('a', 1)", "vmin must be a number"),
    ("inception_crop(224, area_min=50, area_max=10)", "area_min <= area_max"),
    ("onehot(10, key=3)", "key must be a string"),
    ("resize(224, key=1)", "key must be a string"),
    ("resize(224, method='magic')", "method must be one of"),
    ("randaug(-1)", "num_layers must be an int >= 0"),
    ("randaug(1.5)", "num_layers must be an int >= 0"),
    ("randaug(2, 31)", "magnitude must be in [0, 30]"),
    ("randaug(2, 'x')", "magnitude must be a number"),
    ("randaug(2, 10, prob=2)", "prob must be in [0, 1]"),
    ("randaug(2, 10, layers=2)", "unexpected keyword argument 'layers'"),
])
def test_bad_arguments_name_the_op_and_signature(spec, fragment):
    op = spec.split("(")[0]
    with pytest.raises(HarnessError) as e:
        Preprocess(spec)
    message = str(e.value)
    assert fragment in message, message
    assert f"pp op '{op}'" in message and "signature: " + known_ops()[op] in message


@pytest.mark.parametrize("spec", ["keep(image)", "resize(2**8)", "resize(*x)", "value_range(-1,1",
                                  "decode||resize(2)", "a.b(1)"])
def test_unparseable_specs(spec):
    with pytest.raises(HarnessError):
        Preprocess(spec)


def test_string_arguments_may_contain_separators():
    pp = Preprocess("keep('a|b', \"c(d)\")|decode")
    assert pp.ops[0].args == ("a|b", "c(d)") and pp.ops[1].name == "decode"


def test_preprocess_numpy_rejects_non_uint8():
    with pytest.raises(HarnessError, match="uint8"):
        preprocess_numpy("resize(2)", np.zeros((1, 4, 4, 3), np.float32))


# --------------------------------------------------------------------------------------------------
# RandAugment: each op against numpy (or PIL, which defines several of them), then the randaug op

from harness.data.pp import randaug as P  # noqa: E402

SEED = tf.constant([3, 4], tf.int64)


def _ra(name, image, magnitude, seed=SEED):
    return P.RANDAUG_OPS[name](tf.constant(image), float(magnitude), seed).numpy()


def _ra_image(h=12, w=10, lo=40, hi=181, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def _blend_numpy(degenerate, image, factor):
    """The reference's blend in float32: truncate when interpolating, clip first when extrapolating."""
    a = degenerate.astype(np.float32)
    mixed = a + np.float32(factor) * (image.astype(np.float32) - a)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _pil(fn, image, *args):
    from PIL import Image

    return np.asarray(fn(Image.fromarray(image), *args))


def test_randaug_has_the_reference_ops():
    assert list(P.RANDAUG_OPS) == [
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
        "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd"]


def test_randaug_pixel_ops_match_numpy_and_pil():
    from PIL import ImageOps

    image = _ra_image(lo=0, hi=256)
    np.testing.assert_array_equal(_ra("Invert", image, 10), 255 - image)
    np.testing.assert_array_equal(_ra("Invert", image, 10), _pil(ImageOps.invert, image))
    # Posterize keeps int(M / 10 * 4) bits: 4 at M=10, 2 at M=5.
    np.testing.assert_array_equal(_ra("Posterize", image, 10), image & 0xF0)
    np.testing.assert_array_equal(_ra("Posterize", image, 5), image & 0xC0)
    np.testing.assert_array_equal(_ra("Posterize", image, 5), _pil(ImageOps.posterize, image, 2))
    # Solarize: threshold int(M / 10 * 256) as a uint8, so M=10 wraps to 0 and inverts everything.
    np.testing.assert_array_equal(_ra("Solarize", image, 5), np.where(image < 128, image, 255 - image))
    np.testing.assert_array_equal(_ra("Solarize", image, 5), _pil(ImageOps.solarize, image, 128))
    np.testing.assert_array_equal(_ra("Solarize", image, 3), np.where(image < 76, image, 255 - image))
    np.testing.assert_array_equal(_ra("Solarize", image, 10), 255 - image)
    # SolarizeAdd adds int(M / 10 * 110) below 128.
    expected = np.where(image < 128, np.minimum(image.astype(int) + 110, 255), image).astype(np.uint8)
    np.testing.assert_array_equal(_ra("SolarizeAdd", image, 10), expected)
    np.testing.assert_array_equal(_ra("SolarizeAdd", image, 0), image)


def test_randaug_autocontrast_and_equalize_match_numpy_and_pil():
    from PIL import ImageOps

    image = _ra_image()  # values 40..180: a real stretch
    image[..., 2] = 77  # a flat channel stays as it is
    out = _ra("AutoContrast", image, 10)
    expected = image.copy()
    for c in range(2):
        ch = image[..., c].astype(np.float32)
        lo, hi = ch.min(), ch.max()
        scale = np.float32(255) / (hi - lo)
        expected[..., c] = np.clip(ch * scale - lo * scale, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[..., :2].min() == 0 and out[..., :2].max() == 255
    assert np.abs(out.astype(int) - _pil(ImageOps.autocontrast, image)).max() <= 1

    skewed = (np.random.default_rng(1).beta(2, 8, (16, 12, 3)) * 255).astype(np.uint8)
    skewed[0, 0] = 255
    np.testing.assert_array_equal(_ra("Equalize", skewed, 10), _pil(ImageOps.equalize, skewed))
    flat = np.full((4, 4, 3), 9, np.uint8)
    np.testing.assert_array_equal(_ra("Equalize", flat, 10), flat)  # step 0: unchanged


def test_randaug_blends_match_numpy():
    image = _ra_image(lo=0, hi=256)
    for m in (10, 2):  # factor 1.9 (extrapolate, clipped) and 0.46 (interpolate, truncated)
        factor = m / 10 * 1.8 + 0.1
        np.testing.assert_array_equal(_ra("Brightness", image, m),
                                      _blend_numpy(np.zeros_like(image), image, factor))
        grey = (image.astype(np.float32) * np.float32(1 / 255)) @ np.array([0.2989, 0.5870, 0.1140],
                                                                           np.float32)
        grey = np.repeat((grey * np.float32(255.5)).astype(np.uint8)[..., None], 3, -1)
        np.testing.assert_array_equal(_ra("Color", image, m), _blend_numpy(grey, image, factor))
        # The reference's "mean" is pixels / 256: 120 / 256 -> 0 here, and a 64x64 image blends with 16.
        np.testing.assert_array_equal(_ra("Contrast", image, m),
                                      _blend_numpy(np.zeros_like(image), image, factor))
        big = _ra_image(64, 64, lo=0, hi=256)
        np.testing.assert_array_equal(_ra("Contrast", big, m),
                                      _blend_numpy(np.full_like(big, 16), big, factor))
    np.testing.assert_array_equal(_ra("Brightness", image, 5), image)  # factor exactly 1


def test_randaug_sharpness_matches_numpy():
    image = _ra_image(lo=0, hi=256)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13
    h, w = image.shape[:2]
    smooth = image.copy()
    inner = sum(kernel[i, j] * image[i:h - 2 + i, j:w - 2 + j].astype(np.float64)
                for i in range(3) for j in range(3))
    smooth[1:-1, 1:-1] = np.clip(inner, 0, 255).astype(np.uint8)
    out = _ra("Sharpness", image, 10)
    expected = _blend_numpy(smooth, image, 1.9)
    # float32 vs float64 sums may truncate a whole-number mean one apart; the border is exact.
    assert np.abs(out.astype(int) - expected).max() <= 2
    assert np.mean(out == expected) > 0.97
    np.testing.assert_array_equal(out[0], image[0])
    np.testing.assert_array_equal(out[:, -1], image[:, -1])


def test_randaug_geometry_against_numpy():
    image = _coords_image(6, 6)
    np.testing.assert_array_equal(P._rotate(tf.constant(image), 90.0).numpy(), np.rot90(image))
    grey = np.full_like(image, 128)
    expected = grey.copy()
    expected[:, :3] = image[:, 3:]  # column x shows column x + 3
    np.testing.assert_array_equal(P._translate_x(tf.constant(image), 3.0).numpy(), expected)
    expected = grey.copy()
    expected[2:] = image[:-2]
    np.testing.assert_array_equal(P._translate_y(tf.constant(image), -2.0).numpy(), expected)
    sx, sy = grey.copy(), grey.copy()
    for r in range(6):
        for c in range(6):
            if c + r < 6:
                sx[r, c] = image[r, c + r]
                sy[r, c] = image[r + c, c]
    np.testing.assert_array_equal(P._shear_x(tf.constant(image), 1.0).numpy(), sx)
    np.testing.assert_array_equal(P._shear_y(tf.constant(image), 1.0).numpy(), sy)
    expected = image.copy()
    expected[0:3, 3:6] = 128  # rows 1-2..1+2, columns 5-2..5+2, clipped
    np.testing.assert_array_equal(P._cutout(tf.constant(image), 2, 1, 5).numpy(), expected)


def test_randaug_magnitude_zero_geometric_ops_are_identity_and_scale_with_magnitude():
    image = _ra_image(20, 24, lo=0, hi=256)
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout"):
        for i in range(3):
            np.testing.assert_array_equal(_ra(name, image, 0, example_seed(0, i)), image, err_msg=name)
    # Magnitude 10 moves 100 px (whatever the size): a 24 px wide image is all grey.
    np.testing.assert_array_equal(_ra("TranslateX", image, 10), np.full_like(image, 128))
    # Magnitude 1 shifts 10 px, to one side or the other depending on the seed; rotation likewise +-3 deg.
    shifts = set()
    for i in range(12):
        out = _ra("TranslateX", image, 1, example_seed(0, i))
        for pixels in (10.0, -10.0):
            if np.array_equal(out, P._translate_x(tf.constant(image), pixels).numpy()):
                shifts.add(pixels)
        rot = _ra("Rotate", image, 1, example_seed(0, i))
        assert any(np.array_equal(rot, P._rotate(tf.constant(image), d).numpy()) for d in (3.0, -3.0))
    assert shifts == {10.0, -10.0}
    # Cutout at M=10: one grey square of side 80, clipped to the image, somewhere.
    zeros = np.zeros((100, 100, 3), np.uint8)
    for i in range(4):
        grey = _ra("Cutout", zeros, 10, example_seed(0, i))[..., 0] == 128
        rows, cols = np.nonzero(grey.any(1))[0], np.nonzero(grey.any(0))[0]
        assert grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all() and grey.sum() > 0
        assert rows.max() - rows.min() < 80 and cols.max() - cols.min() < 80


def test_randaug_op_is_seeded_shape_preserving_and_picks_one_op_per_layer():
    image = _ra_image(16, 16, lo=0, hi=256)
    pp = "randaug(2, 10)"
    outs = [_run(pp, image, seed=example_seed(0, i)) for i in range(24)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(_run(pp, image, seed=example_seed(0, 5)), outs[5])  # deterministic
    assert len({o.tobytes() for o in outs}) >= 12  # seeds differ -> results differ
    np.testing.assert_array_equal(_run("randaug(0, 10)", image, seed=SEED), image)
    np.testing.assert_array_equal(_run("randaug(3, 10, prob=0)", image, seed=SEED), image)
    # One layer: about 10/16 of the draws are one of the 10 seed-free ops (distinct outputs here).
    image = _ra_image(16, 16, lo=20, hi=231)
    fixed = {name: _ra(name, image, 7) for name in ("AutoContrast", "Equalize", "Invert", "Posterize",
                                                    "Solarize", "Color", "Contrast", "Brightness",
                                                    "Sharpness", "SolarizeAdd")}
    assert len({v.tobytes() for v in fixed.values()}) == len(fixed)
    hits = []
    for i in range(48):
        out = _run("randaug(1, 7)", image, seed=example_seed(1, i))
        hits += [name for name, ref in fixed.items() if np.array_equal(out, ref)]
    assert 18 <= len(hits) <= 42 and len(set(hits)) >= 6, hits


def test_randaug_in_a_tf_data_pipeline_with_unknown_sizes():
    images = [_ra_image(20 + i, 18, lo=0, hi=256, seed=i) for i in range(4)]
    pp = Preprocess("decode|inception_crop(16)|flip_lr|randaug(2, 10)|value_range(-1, 1)")
    assert pp.is_random
    ds = tf.data.Dataset.from_tensor_slices([tf.io.encode_png(im).numpy() for im in images])
    ds = ds.enumerate().map(lambda i, png: pp({"image": png}, seed=example_seed(0, i)))
    assert ds.element_spec["image"].shape == (16, 16, 3)
    out = np.stack([d["image"].numpy() for d in ds])
    assert out.dtype == np.float32 and out.shape == (4, 16, 16, 3) and -1 <= out.min() <= out.max() <= 1
    np.testing.assert_array_equal(out, preprocess_numpy(pp, images))  # graph == eager, same seeds


def test_randaug_needs_uint8_pixels():
    with pytest.raises(HarnessError, match="randaug works on uint8.*before value_range"):
        _run("value_range(-1, 1)|randaug", np.zeros((4, 4, 3), np.uint8), seed=SEED)
