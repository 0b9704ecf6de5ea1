"""Realistic ImageNet-format JPEGs from real photographs, offline: the input of `harness bench --pipeline`
and `--end-to-end`.

    pip install -e ".[bench]"        # scikit-image: its sample photographs ship inside the package
    python benchmarks/make_jpegs.py --data-dir /tmp/bench-data --num 3000

Each image is a random crop (30-100% of the area) of one of scikit-image's sample photographs, resized with
Lanczos to an ImageNet-like size (the longer side mostly 500 px, the shorter 333-500 px, either orientation),
flipped or not, its brightness moved by up to 10%, and saved as a baseline 4:2:0 JPEG at quality 90-95: a
pure function of (seed, index). The files go into archives laid out as the official ones
(`ILSVRC2012_img_val.tar`: ILSVRC2012_val_%08d.JPEG; a one-class `ILSVRC2012_img_train.tar`), and TFDS's own
`imagenet2012` builder prepares them under --data-dir, so `harness.data.iterate("imagenet2012", "validation")`
reads them exactly as it reads ImageNet. Prints one JSON line (the folder, counts, sizes, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# scikit-image's photographs that load without a download (skimage.data), colour and grey.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "moon", "brick", "grass", "gravel", "clock")
TRAIN_SYNSET = "n01440764"  # the one class of the small train archive (TFDS's builder wants both archives)


def _photos() -> list[np.ndarray]:
    try:
        import skimage.data
    except ImportError:
        sys.exit("make_jpegs.py needs scikit-image (its sample photographs): pip install -e '.[bench]'")
    out = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(image[:, :, :3]).astype(np.uint8))
    return out


_CACHE: dict[str, list[np.ndarray]] = {}


def make_jpeg(seed: int, index: int) -> bytes:
    """Image `index` of the set `seed`, as JPEG bytes."""
    from PIL import Image

    photos = _CACHE.setdefault("photos", _photos())
    rng = np.random.default_rng([seed, index])
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    area = rng.uniform(0.3, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, max(16, round(np.sqrt(area / aspect)))))
    cw = int(min(w, max(16, round(np.sqrt(area * aspect)))))
    top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    crop = Image.fromarray(photo[top:top + ch, left:left + cw])
    longer = 500 if rng.uniform() < 0.85 else int(rng.integers(400, 501))
    shorter = int(rng.integers(333, longer + 1))
    size = (longer, shorter) if rng.uniform() < 0.7 else (shorter, longer)  # (width, height): mostly landscape
    image = np.asarray(crop.resize(size, Image.LANCZOS), np.float32)
    if rng.uniform() < 0.5:
        image = image[:, ::-1]
    image = np.clip(image * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=int(rng.integers(90, 96)))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_archives(manual: Path, num: int, seed: int, workers: int) -> dict:
    """The two archives under `manual`; returns size statistics of the validation images."""
    from PIL import Image

    sizes, total_bytes = [], 0
    with ProcessPoolExecutor(workers) as pool, tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i, jpeg in enumerate(pool.map(make_jpeg, [seed] * num, range(num), chunksize=16), start=1):
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg)
            sizes.append(Image.open(io.BytesIO(jpeg)).size)
            total_bytes += len(jpeg)
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tar:
            for i in range(2):
                _add(tar, f"{TRAIN_SYNSET}_{i}.JPEG", make_jpeg(seed + 1, i))
        _add(outer, f"{TRAIN_SYNSET}.tar", inner.getvalue())
    shorter = [min(s) for s in sizes]
    return {"shorter_side_min": min(shorter), "shorter_side_max": max(shorter),
            "mean_kb": round(total_bytes / num / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="the TFDS data folder to prepare imagenet2012 in")
    ap.add_argument("--num", type=int, default=3000, help="validation images (at most 50000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args(argv)
    if not 1 <= args.num <= 50_000:
        sys.exit(f"--num {args.num}: give 1 to 50000 (TFDS's validation labels cover 50000 images)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="make-jpegs-") as tmp:
        manual = Path(tmp)
        stats = write_archives(manual, args.num, args.seed, args.workers)
        made = time.perf_counter() - t0
        import tensorflow_datasets as tfds

        builder = tfds.builder("imagenet2012", data_dir=args.data_dir)
        # TFDS prints its "Downloading and preparing" lines on stdout; stdout is this script's JSON line only.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    print(json.dumps({"data_dir": args.data_dir, "dataset": "imagenet2012", "split": "validation",
                      "images": args.num, **stats, "make_seconds": round(made, 1),
                      "prepare_seconds": round(time.perf_counter() - t0 - made, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
