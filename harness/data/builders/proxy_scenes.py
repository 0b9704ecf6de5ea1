"""`proxy_scenes`: a small generated scene dataset that stands in for the real benchmarks offline.

Every image is 64x64 RGB: a textured, muted background and 1-3 flat shapes. The main (largest) object
gives the class label ("red circle"; 4 shapes x 6 colours = 24 classes, also the zero-shot class
names), and the same scene is described by 5 captions and asked 3 VQA-style questions with 10 noisy
annotator answers each. So one dataset feeds every proxy task: few-shot and fine-tuning (label),
captioning and retrieval (captions), VQA (questions) and LiT zero-shot (class names). Each scene also
carries dense targets for the dense probes: `segmentation`, a per-pixel class mask (0 = background, 1 + the
object's class id for its pixels: 25 classes), and `depth`, a depth map in metres (painter's order: an
object drawn later is nearer; the background is the farthest, a plane tilted towards the viewer at the
bottom).

Determinism: each example comes from `numpy.random.default_rng([seed, split_code, index, stream])`
with four independent streams (scene layout, pixels, wording, depths), and rendering uses integer arithmetic
only (no transcendental functions whose last bit may differ between CPUs), so a given config produces
the same pixels and text on every machine. The PNG bytes come from TensorFlow's own encoder (same
bytes for the same TF). The .tfrecord files themselves are not byte-stable: TFDS serialises each
tf.train.Example's feature map in an order that changes from process to process.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

SHAPES = ("circle", "square", "triangle", "cross")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
COLOUR_RGB = {
    "red": (215, 40, 35),
    "green": (40, 175, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 210, 40),
    "purple": (150, 50, 195),
    "white": (240, 240, 240),
}
# Class c is COLOURS[c // 4] + SHAPES[c % 4]: "red circle", "red square", ...
CLASS_NAMES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
BACKGROUNDS = ("plain", "striped", "checkered", "speckled")
# Words a caption may use for each background; the first is the canonical VQA answer.
BACKGROUND_WORDS = {
    "plain": ("plain", "flat", "solid"),
    "striped": ("striped", "stripy", "lined"),
    "checkered": ("checkered", "checkerboard", "chequered"),
    "speckled": ("speckled", "noisy", "grainy"),
}
ANSWER_TYPES = ("yes/no", "number", "other")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
SPLITS = ("pretrain", "train", "val", "test")
DEFAULT_SPLIT_SIZES = {"pretrain": 6000, "train": 1000, "val": 250, "test": 500}
# Split codes feed the seed (so splits are disjoint draws) and the id ranges (so ids are unique).
_SPLIT_CODES = {"pretrain": 0, "train": 1, "val": 2, "test": 3}
_IDS_PER_SPLIT = 1_000_000
_ANSWERS_PER_QUESTION = 10
_WRONG_ANSWER_RATE = 0.1

IMAGE_SIZE = 64
_SUPERSAMPLE = 4  # shapes are rasterised on a 4x finer grid and box-filtered: anti-aliased edges
_FINE = IMAGE_SIZE * _SUPERSAMPLE
_STREAM_SCENE, _STREAM_PIXELS, _STREAM_TEXT, _STREAM_DEPTH = 0, 1, 2, 3
# Dense targets: mask value 0 is the background, object pixels get 1 + their class id.
SEGMENTATION_CLASS_NAMES = ("background", *CLASS_NAMES)
# Depths in millimetres (integers; stored as float16 metres, as TFDS's nyu_depth_v2 stores depth): the
# background plane's far edge (top row) and its tilt towards the viewer per row, and the objects' depths,
# each nearer than the one drawn before it (painter's order).
_FAR_MM = (7000, 9500)
_TILT_MM_PER_ROW = (0, 30)
_OBJECT_MM, _OBJECT_STEP_MM, _OBJECT_JITTER_MM = 4000, 1000, 250


# --------------------------------------------------------------------------------------------------
# Scene layout


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape; centre and radius are in 1/4-pixel units (the supersampled grid)."""

    shape: str
    colour: str
    size: str  # "large" (only the main object) or "small"
    centre_x: int
    centre_y: int
    radius: int


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything an example says about its image: objects[0] is the main (largest) one."""

    objects: tuple[SceneObject, ...]
    background: str

    @property
    def main(self) -> SceneObject:
        return self.objects[0]


def class_index(colour: str, shape: str) -> int:
    """Label id of a (colour, shape) pair."""
    return COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, stream])


def sample_scene(seed: int, split: str, index: int) -> Scene:
    """Lays out the scene of one example; the label cycles through the classes (balanced splits)."""
    rng = _rng(seed, split, index, _STREAM_SCENE)
    label = index % len(CLASS_NAMES)
    num_objects = 1 + int(rng.choice(3, p=[0.3, 0.4, 0.3]))
    specs = [(SHAPES[label % len(SHAPES)], COLOURS[label // len(SHAPES)], "large",
              int(rng.integers(11 * _SUPERSAMPLE, 16 * _SUPERSAMPLE + 1)))]
    for _ in range(num_objects - 1):
        specs.append((SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))],
                      "small", int(rng.integers(5 * _SUPERSAMPLE, 8 * _SUPERSAMPLE + 1))))
    objects: list[SceneObject] = []
    for shape, colour, size, radius in specs:
        margin = radius + _SUPERSAMPLE
        for _ in range(100):
            x = int(rng.integers(margin, _FINE - margin + 1))
            y = int(rng.integers(margin, _FINE - margin + 1))
            # Only slight overlap: centres at least 0.85 x the summed radii apart.
            if all(400 * ((x - o.centre_x) ** 2 + (y - o.centre_y) ** 2)
                   >= 289 * (radius + o.radius) ** 2 for o in objects):
                objects.append(SceneObject(shape, colour, size, x, y, radius))
                break
        # A small object that finds no free place is left out; counts in the text follow `objects`.
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(objects=tuple(objects), background=background)


# --------------------------------------------------------------------------------------------------
# Rendering (integer arithmetic only)


def _shape_mask(obj: SceneObject, fine_x: np.ndarray, fine_y: np.ndarray) -> np.ndarray:
    """Inside-test on sample points given in doubled fine units (so pixel centres are integers)."""
    dx = fine_x - 2 * obj.centre_x
    dy = fine_y - 2 * obj.centre_y
    r = 2 * obj.radius
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        half = (r * 13) // 16  # a little smaller than the circle, for similar areas
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if obj.shape == "cross":
        arm = r // 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if obj.shape == "triangle":
        # Upright triangle with its apex at the top; inside = on the inner side of all three edges.
        ax, ay = 0, -r
        bx, by = -r, (3 * r) // 4
        cx, cy = r, (3 * r) // 4
        e0 = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
        e1 = (cx - bx) * (dy - by) - (cy - by) * (dx - bx)
        e2 = (ax - cx) * (dy - cy) - (ay - cy) * (dx - cx)
        return (e0 <= 0) & (e1 <= 0) & (e2 <= 0)
    raise ValueError(f"unknown shape {obj.shape!r}")


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A muted colour with a texture, int32 (64, 64, 3)."""
    base = int(rng.integers(50, 141))
    colour = base + rng.integers(-20, 21, size=3)
    delta = int(rng.integers(20, 41)) * (1 if rng.random() < 0.5 else -1)
    rows, cols = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    if kind == "plain":
        second = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    elif kind == "striped":
        period = int(rng.integers(4, 11))
        coordinate = (rows, cols, rows + cols, rows - cols + IMAGE_SIZE)[rng.integers(4)]
        second = (coordinate // period) % 2 == 1
    elif kind == "checkered":
        cell = int(rng.integers(4, 11))
        second = ((rows // cell) + (cols // cell)) % 2 == 1
    elif kind == "speckled":
        second = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    else:
        raise ValueError(f"unknown background {kind!r}")
    image = np.broadcast_to(colour, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.int32)
    image = image + delta * second[..., None].astype(np.int32)
    if kind == "speckled":
        image = image + rng.integers(-30, 31, size=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.int32)
    return image


def _coverage(obj: SceneObject) -> tuple[int, int, int, int, np.ndarray]:
    """The object's bounding box in output pixels (lo_y, hi_y, lo_x, hi_x) and, per pixel of it, how many of
    its 4x4 supersamples the shape covers (0..16)."""
    lo_x = max(0, (obj.centre_x - obj.radius) // _SUPERSAMPLE - 1)
    hi_x = min(IMAGE_SIZE, (obj.centre_x + obj.radius) // _SUPERSAMPLE + 2)
    lo_y = max(0, (obj.centre_y - obj.radius) // _SUPERSAMPLE - 1)
    hi_y = min(IMAGE_SIZE, (obj.centre_y + obj.radius) // _SUPERSAMPLE + 2)
    fine_y, fine_x = np.mgrid[lo_y * _SUPERSAMPLE:hi_y * _SUPERSAMPLE,
                              lo_x * _SUPERSAMPLE:hi_x * _SUPERSAMPLE]
    mask = _shape_mask(obj, 2 * fine_x + 1, 2 * fine_y + 1)
    coverage = mask.reshape(hi_y - lo_y, _SUPERSAMPLE, hi_x - lo_x, _SUPERSAMPLE).sum(axis=(1, 3))
    return lo_y, hi_y, lo_x, hi_x, coverage


def render_scene(scene: Scene, seed: int, split: str, index: int) -> np.ndarray:
    """Rasterises a scene: uint8 (64, 64, 3)."""
    rng = _rng(seed, split, index, _STREAM_PIXELS)
    image = _background(scene.background, rng)
    for obj in scene.objects:
        # Only the object's bounding box (in output pixels) is supersampled.
        lo_y, hi_y, lo_x, hi_x, coverage = _coverage(obj)
        colour = np.asarray(COLOUR_RGB[obj.colour]) + rng.integers(-12, 13, size=3)
        full = _SUPERSAMPLE * _SUPERSAMPLE
        patch = image[lo_y:hi_y, lo_x:hi_x]
        a = coverage[..., None]
        image[lo_y:hi_y, lo_x:hi_x] = (patch * (full - a) + colour * a + full // 2) // full
    image = image + rng.integers(-4, 5, size=image.shape, dtype=np.int32)  # sensor-like noise
    return np.clip(image, 0, 255).astype(np.uint8)


def render_targets(scene: Scene, seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene's dense targets: a uint8 (64, 64) class mask and a float16 (64, 64) depth map in metres.

    A pixel belongs to the last-drawn object covering at least half of it (8 of its 16 supersamples), as the
    painter's algorithm that renders the image: its mask value is 1 + the object's class id, its depth the
    object's. Other pixels are background: mask 0, depth the background plane's. Depths are integer
    millimetres drawn from the example's own stream, so the image, label and text streams are untouched."""
    rng = _rng(seed, split, index, _STREAM_DEPTH)
    far = int(rng.integers(_FAR_MM[0], _FAR_MM[1] + 1))
    tilt = int(rng.integers(_TILT_MM_PER_ROW[0], _TILT_MM_PER_ROW[1] + 1))
    depth_mm = np.broadcast_to((far - tilt * np.arange(IMAGE_SIZE))[:, None], (IMAGE_SIZE, IMAGE_SIZE)).copy()
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    half = _SUPERSAMPLE * _SUPERSAMPLE // 2
    for i, obj in enumerate(scene.objects):
        object_mm = (_OBJECT_MM - _OBJECT_STEP_MM * i
                     + int(rng.integers(-_OBJECT_JITTER_MM, _OBJECT_JITTER_MM + 1)))
        lo_y, hi_y, lo_x, hi_x, coverage = _coverage(obj)
        inside = coverage >= half
        mask[lo_y:hi_y, lo_x:hi_x][inside] = 1 + class_index(obj.colour, obj.shape)
        depth_mm[lo_y:hi_y, lo_x:hi_x][inside] = object_mm
    return mask, (depth_mm / 1000.0).astype(np.float16)


# --------------------------------------------------------------------------------------------------
# Text: captions, questions, annotator answers


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _noun_phrase(obj: SceneObject, rng: np.random.Generator, count: int = 1) -> str:
    size_words = ("large", "big") if obj.size == "large" else ("small", "little", "tiny")
    if count > 1:
        return f"{NUMBER_WORDS[count]} {_pick(rng, size_words)} {obj.colour} {SHAPE_PLURALS[obj.shape]}"
    return _with_article(f"{_pick(rng, size_words)} {obj.colour} {obj.shape}")


def _small_phrases(others: list[SceneObject], rng: np.random.Generator) -> list[str]:
    """Noun phrases for the small objects; identical ones are merged ("two small white squares")."""
    counts = collections.Counter((o.colour, o.shape) for o in others)
    firsts = {}
    for o in others:
        firsts.setdefault((o.colour, o.shape), o)
    return [_noun_phrase(o, rng, counts[key]) for key, o in firsts.items()]


def _relation(main: SceneObject, other: SceneObject) -> str:
    """Where the main object is relative to the other one (image y grows downwards)."""
    dx = other.centre_x - main.centre_x
    dy = other.centre_y - main.centre_y
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def make_captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` different true captions; each names the main object's colour and shape."""
    main, others = scene.main, list(scene.objects[1:])
    n = len(scene.objects)
    main_np = _noun_phrase(main, rng)
    other_nps = _small_phrases(others, rng)
    all_nps = [main_np] + other_nps
    bg = _pick(rng, BACKGROUND_WORDS[scene.background])
    count_word = NUMBER_WORDS[n]
    nouns = "shape" if n == 1 else _pick(rng, ("shapes", "objects"))
    largest = _pick(rng, ("largest", "biggest"))
    templates = [
        f"{_join(all_nps)} on {_with_article(bg)} background",
        f"{_pick(rng, ('an image', 'a picture', 'a photo'))} {_pick(rng, ('of', 'showing'))} "
        f"{_join(all_nps)}",
        f"{count_word} {nouns}: {_join(all_nps)}",
        f"{_with_article(bg)} background with {_join(all_nps)}",
        f"there {'is' if n == 1 else 'are'} {count_word} {nouns} here and the {largest} one is "
        f"{_with_article(main.colour)} {main.shape}",
    ]
    if others:
        templates += [
            _join(other_nps + [main_np]),
            f"{main_np} {_relation(main, others[0])} {_noun_phrase(others[0], rng)}",
            f"the {largest} {_pick(rng, ('shape', 'object'))} is {_with_article(main.colour)} "
            f"{main.shape}, next to {_join(other_nps)}",
        ]
    else:
        templates += [
            f"a single {main.colour} {main.shape} on {_with_article(bg)} background",
            f"just one {_pick(rng, ('large', 'big'))} {main.colour} {main.shape}",
        ]
    order = rng.permutation(len(templates))[:count]
    return [templates[i] for i in order]


def normalise_answer(answer: str) -> str:
    """Rough canonical form used only to pick the majority answer (not the official VQA metric)."""
    words = answer.strip().lower().rstrip(".").split()
    words = [w for w in words if w not in ("a", "an", "the")]
    words = [str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS else w for w in words]
    return " ".join(words)


def _answer_variants(kind: str, answer: str) -> list[tuple[str, float]]:
    """How annotators write a correct answer: spelling, case and article variants with weights."""
    if kind == "yes/no":
        return [(answer, 0.8), (answer.capitalize(), 0.15), (answer + ".", 0.05)]
    if kind == "number":
        word = NUMBER_WORDS[int(answer)]
        return [(answer, 0.7), (word, 0.22), (word.capitalize(), 0.08)]
    if answer in SHAPES:
        return [(answer, 0.65), (f"a {answer}", 0.2), (answer.capitalize(), 0.1),
                (SHAPE_PLURALS[answer], 0.05)]
    if answer in BACKGROUND_WORDS:
        return [(answer, 0.8), (answer.capitalize(), 0.1), (BACKGROUND_WORDS[answer][1], 0.1)]
    if answer == "purple":
        return [(answer, 0.8), (answer.capitalize(), 0.12), ("violet", 0.08)]
    return [(answer, 0.85), (answer.capitalize(), 0.15)]


def annotate(kind: str, answer: str, wrong: list[str], rng: np.random.Generator) -> list[str]:
    """Ten annotator answers: mostly a variant of the right one, about 10% a plausible wrong one."""
    variants = _answer_variants(kind, answer)
    texts = [t for t, _ in variants]
    cumulative = list(itertools.accumulate(w for _, w in variants))
    draws = rng.random((_ANSWERS_PER_QUESTION, 2))
    answers = []
    for is_wrong, which in draws:
        if is_wrong < _WRONG_ANSWER_RATE:
            answers.append(wrong[int(which * len(wrong))])
        else:
            pick = bisect.bisect_right(cumulative, which * cumulative[-1])
            answers.append(texts[min(pick, len(texts) - 1)])
    return answers


def majority_answer(answers: list[str]) -> str:
    """The most common answer after rough normalisation (ties: alphabetical), like VQA's field."""
    counts = collections.Counter(normalise_answer(a) for a in answers)
    return min(counts, key=lambda a: (-counts[a], a))


def _yes_no_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    objects, main = scene.objects, scene.main
    kind = int(rng.integers(4))
    want_yes = rng.random() < 0.5
    if kind == 0:
        if want_yes:
            obj = objects[int(rng.integers(len(objects)))]
            colour, shape = obj.colour, obj.shape
        else:
            present = {(o.colour, o.shape) for o in objects}
            absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
            colour, shape = absent[int(rng.integers(len(absent)))]
        template = _pick(rng, ("is there a {} {}?", "is there a {} {} in the image?",
                               "do you see a {} {}?"))
        question = template.format(colour, shape)
        yes = any(o.colour == colour and o.shape == shape for o in objects)
    elif kind == 1:
        shape = main.shape if want_yes else _pick(rng, [s for s in SHAPES if s != main.shape])
        question = f"is the {_pick(rng, ('large', 'big', 'largest'))} shape {_with_article(shape)}?"
        yes = shape == main.shape
    elif kind == 2:
        colours = [o.colour for o in objects]
        colour = _pick(rng, colours) if want_yes else _pick(rng, COLOURS)
        question = _pick(rng, ("are there any {} shapes?", "is anything {}?",
                               "are there {} objects?")).format(colour)
        yes = colour in colours
    else:
        word = scene.background if want_yes else _pick(rng, BACKGROUNDS)
        question = f"is the background {word}?"
        yes = word == scene.background
    return question, "yes" if yes else "no"


def _number_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    objects = scene.objects
    kind = int(rng.integers(3))
    if kind == 0:
        shape = _pick(rng, [o.shape for o in objects]) if rng.random() < 0.7 else _pick(rng, SHAPES)
        question = _pick(rng, ("how many {} are there?", "how many {} are in the picture?",
                               "how many {} can you see?")).format(SHAPE_PLURALS[shape])
        count = sum(o.shape == shape for o in objects)
    elif kind == 1:
        question = _pick(rng, ("how many shapes are there?", "how many objects are in the image?",
                               "how many things are there?"))
        count = len(objects)
    else:
        colour = _pick(rng, [o.colour for o in objects]) if rng.random() < 0.7 else _pick(rng, COLOURS)
        question = _pick(rng, ("how many {} shapes are there?",
                               "how many {} objects can you see?")).format(colour)
        count = sum(o.colour == colour for o in objects)
    return question, str(count)


def _other_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    objects, main = scene.objects, scene.main
    colour_word = _pick(rng, ("colour", "color"))
    choices = ["main_colour", "main_shape", "background"]
    unique_shapes = [s for s in SHAPES if sum(o.shape == s for o in objects) == 1]
    unique_colours = [c for c in COLOURS if sum(o.colour == c for o in objects) == 1]
    if len(objects) > 1 and unique_shapes:
        choices += ["colour_of_shape", "colour_of_shape"]
    if len(objects) > 1 and unique_colours:
        choices += ["shape_of_colour", "shape_of_colour"]
    kind = _pick(rng, choices)
    if kind == "main_colour":
        return f"what {colour_word} is the {_pick(rng, ('large', 'big'))} shape?", main.colour
    if kind == "main_shape":
        return f"what shape is the {_pick(rng, ('largest', 'biggest'))} object?", main.shape
    if kind == "background":
        return _pick(rng, ("what pattern is the background?", "what kind of background is it?")), \
            scene.background
    if kind == "colour_of_shape":
        shape = _pick(rng, unique_shapes)
        colour = next(o.colour for o in objects if o.shape == shape)
        return f"what {colour_word} is the {shape}?", colour
    colour = _pick(rng, unique_colours)
    shape = next(o.shape for o in objects if o.colour == colour)
    return f"what shape is the {colour} object?", shape


def _wrong_answers(kind: str, answer: str) -> list[str]:
    if kind == "yes/no":
        return ["no" if answer == "yes" else "yes"]
    if kind == "number":
        n = int(answer)
        return [str(m) for m in (n - 1, n + 1) if m >= 0]
    for group in (COLOURS, SHAPES, BACKGROUNDS):
        if answer in group:
            return [g for g in group if g != answer]
    raise ValueError(f"no wrong answers for {answer!r}")


def make_questions(scene: Scene, rng: np.random.Generator, image_id: int) -> list[dict[str, Any]]:
    """One yes/no, one number and one other question, in random order, with 10 answers each."""
    makers = {"yes/no": _yes_no_question, "number": _number_question, "other": _other_question}
    questions = []
    for j, i in enumerate(rng.permutation(len(ANSWER_TYPES))):
        kind = ANSWER_TYPES[i]
        question, answer = makers[kind](scene, rng)
        answers = annotate(kind, answer, _wrong_answers(kind, answer), rng)
        questions.append({
            "question_id": image_id * 10 + j,
            "question": question,
            "answers": answers,
            "answer_type": kind,
            "multiple_choice_answer": majority_answer(answers),
        })
    return questions


def image_id_of(split: str, index: int) -> int:
    """Globally unique image id: the split code in the millions, then the index."""
    return (_SPLIT_CODES[split] + 1) * _IDS_PER_SPLIT + index


def make_example(seed: int, split: str, index: int, with_image: bool = True) -> dict[str, Any]:
    """One example as a plain dict (the builder's feature dict; `image`, `segmentation` and `depth` are None
    without pixels)."""
    scene = sample_scene(seed, split, index)
    text_rng = _rng(seed, split, index, _STREAM_TEXT)
    image_id = image_id_of(split, index)
    mask, depth = render_targets(scene, seed, split, index) if with_image else (None, None)
    return {
        "id": index,
        "image_id": image_id,
        "image": render_scene(scene, seed, split, index) if with_image else None,
        "label": class_index(scene.main.colour, scene.main.shape),
        "captions": make_captions(scene, text_rng),
        "questions": make_questions(scene, text_rng, image_id),
        "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size} for o in scene.objects],
        "background": scene.background,
        "segmentation": None if mask is None else mask[..., None],
        "depth": depth,
    }


# --------------------------------------------------------------------------------------------------
# TFDS builder


@dataclasses.dataclass(eq=False)
class ProxyScenesConfig(tfds.core.BuilderConfig):
    """Split sizes and the generation seed; the pair fixes every byte of the dataset."""

    seed: int = 0
    num_pretrain: int = DEFAULT_SPLIT_SIZES["pretrain"]
    num_train: int = DEFAULT_SPLIT_SIZES["train"]
    num_val: int = DEFAULT_SPLIT_SIZES["val"]
    num_test: int = DEFAULT_SPLIT_SIZES["test"]

    def split_sizes(self) -> dict[str, int]:
        return {"pretrain": self.num_pretrain, "train": self.num_train, "val": self.num_val,
                "test": self.num_test}


class ProxyScenes(tfds.core.GeneratorBasedBuilder):
    """Generated shapes-on-texture scenes with labels, captions and VQA questions."""

    # 1.1.0 adds features, so data prepared at 1.0.0 cannot be read with this builder: the harness prepares
    # 1.1.0 beside it on first use (generated datasets are built when missing); every 1.0.0 feature is
    # unchanged, example for example.
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First version.",
                     "1.1.0": "Dense targets: `segmentation` (class mask) and `depth` (metres)."}
    BUILDER_CONFIGS = [
        ProxyScenesConfig(name="default", description="pretrain 6000, train 1000, val 250, test 500."),
        ProxyScenesConfig(name="tiny", description="pretrain 96, train 48, val 24, test 24: for tests.",
                          num_pretrain=96, num_train=48, num_val=24, num_test=24),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "Offline proxy dataset: 64x64 images of 1-3 coloured shapes (circle, square, triangle, "
                "cross; red, green, blue, yellow, purple, white) on a textured background. label = "
                "'<colour> <shape>' of the largest object (24 classes); 5 captions per image; 3 "
                "questions per image with 10 annotator answers (VQA format). Dense targets: segmentation = "
                "per-pixel class mask (0 background, 1 + class id: 25 classes), depth = metres (painter's "
                "order; background farthest)."
            ),
            features=tfds.features.FeaturesDict({
                "id": tf.int64,  # index within the split (TFDS stores examples shuffled)
                "image_id": tf.int64,  # unique over all splits: (split code + 1) * 10^6 + id
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                "captions": tfds.features.Sequence(tfds.features.Text()),
                "questions": tfds.features.Sequence({
                    "question_id": tf.int64,
                    "question": tfds.features.Text(),
                    # A fixed-length string tensor: TFDS cannot decode a fixed-length Sequence
                    # nested in a Sequence, and (questions, 10) batches better than ragged.
                    "answers": tfds.features.Tensor(shape=(_ANSWERS_PER_QUESTION,),
                                                    dtype=tf.string),
                    "answer_type": tfds.features.Text(),
                    "multiple_choice_answer": tfds.features.Text(),
                }),
                # The ground truth behind the text (objects[0] is the main one), for checks.
                "objects": tfds.features.Sequence({
                    "shape": tfds.features.ClassLabel(names=list(SHAPES)),
                    "colour": tfds.features.ClassLabel(names=list(COLOURS)),
                    "size": tfds.features.ClassLabel(names=["small", "large"]),
                }),
                "background": tfds.features.Text(),  # one of BACKGROUNDS
                # Dense targets (render_targets): a PNG class mask as ADE20k's annotations, and depth in
                # metres as float16, as TFDS's nyu_depth_v2 stores it (zlib: piecewise constant maps).
                "segmentation": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format="png"),
                "depth": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE), dtype=np.float16,
                                              encoding=tfds.features.Encoding.ZLIB),
            }),
            supervised_keys=("image", "label"),
            homepage="",
            citation="",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config: ProxyScenesConfig = self.builder_config
        for split, size in config.split_sizes().items():
            if not 0 < size < _IDS_PER_SPLIT:
                raise ValueError(f"proxy_scenes split {split} size {size} must be in 1..999999")
        return {split: self._generate_examples(split, size)
                for split, size in config.split_sizes().items()}

    def _generate_examples(self, split: str, size: int) -> Iterator[tuple[int, dict[str, Any]]]:
        seed = self.builder_config.seed
        for index in range(size):
            yield index, make_example(seed, split, index)


def iter_text(seed: int = 0, sizes: dict[str, int] | None = None) -> Iterator[str]:
    """All text of the pretrain and train splits (class names, captions, questions, answers).

    Used to train the proxy sentencepiece model; no pixels are rendered.
    """
    sizes = sizes or {split: DEFAULT_SPLIT_SIZES[split] for split in ("pretrain", "train")}
    yield from CLASS_NAMES
    for split, size in sizes.items():
        for index in range(size):
            example = make_example(seed, split, index, with_image=False)
            yield from example["captions"]
            for question in example["questions"]:
                yield question["question"]
                yield from question["answers"]
                yield question["multiple_choice_answer"]
