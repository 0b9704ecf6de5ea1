"""The paper's shape scaling law and its published constants.

Per shape dimension x (width, depth or MLP size) and training compute t, Section 3 of "Getting ViT in
Shape" models a downstream loss as

    f(x, t) = alpha * x^-a + (beta * x^b + xi) * t^-c + eps,        all seven parameters > 0,

fitted by minimising the relative error (`harness.shape.fit`). At fixed t the loss is lowest at
x*(t) = (alpha*a*t^c / (beta*b))^(1/(a+b)), so x* ~ t^s with s = c / (a+b).

Shapes are then scaled the paper's way (`harness.shape.recommend`): start from a small compute-optimal
shape and, to scale compute by tau, grow dimension k by tau^(s_k/D) (equal compute shares w_k = 1/D over the
D dimensions). The rest of the package: `points` (sweep records -> fitted arms), `plots`, `report` (what
`harness shape` prints), `sweep` (`harness sweep`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

DIMENSIONS = ("width", "depth", "mlp_dim")

# s_k = c/(a_k+b_k) as fitted in the paper (v5): ImageNet 10-shot error, and multitask decoding
# log-perplexity.
PAPER_EXPONENTS: dict[str, dict[str, float]] = {
    "classification": {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
    "decoding": {"width": 0.25, "depth": 0.49, "mlp_dim": 0.62},
}

# The small compute-optimal shape of the paper's grid sweep (width, depth, MLP).
PAPER_START = (608, 10, 928)

# The paper's shapes, for comparing recommendations: (width, depth, mlp_dim), 16 heads, patch 14.
SOVIT_SHAPES = {"SoViT-150m/14": (880, 18, 2320), "SoViT-400m/14": (1152, 27, 4304)}


@dataclasses.dataclass(frozen=True)
class LawParams:
    """Parameters of f(x, t) = alpha*x^-a + (beta*x^b + xi)*t^-c + eps; all > 0."""

    alpha: float
    a: float
    beta: float
    b: float
    xi: float
    c: float
    eps: float

    @property
    def s(self) -> float:
        """Exponent of the compute-optimal size: x* ~ t^s."""
        return self.c / (self.a + self.b)

    def as_array(self) -> np.ndarray:
        return np.array(dataclasses.astuple(self), dtype=np.float64)

    @classmethod
    def from_array(cls, values: Iterable[float]) -> LawParams:
        return cls(*(float(v) for v in values))


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(LawParams))


def law(x, t, params: LawParams) -> np.ndarray:
    """The loss the law predicts at size x and compute t (arrays broadcast)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    p = params
    return p.alpha * x ** -p.a + (p.beta * x ** p.b + p.xi) * t ** -p.c + p.eps


def optimum(t, params: LawParams) -> np.ndarray:
    """x*(t) = (alpha*a*t^c / (beta*b))^(1/(a+b)), the size with the lowest predicted loss at compute t."""
    p = params
    t = np.asarray(t, dtype=np.float64)
    return (p.alpha * p.a * t ** p.c / (p.beta * p.b)) ** (1.0 / (p.a + p.b))
