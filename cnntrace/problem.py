"""One problem to trace: an image (or a batch), its labels, the parameters and the options.

Users write shapes the way the derivation does: a 6x6 image, a 3x3 filter, W2 as a list,
B2 as a number. The pass itself always works on the general shapes (a batch of M images,
K filters). ``Problem`` checks the values, converts them to the general shapes, and puts each
result back into the shape the user gave: a single image or a single filter adds no axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from cnntrace.errors import InputError
from cnntrace.ops import output_size

#: A pass keeps every matrix it makes; it may need at most this much memory for them.
MAX_PASS_BYTES = 4 * 2**30
#: The most work one pass may take, counted in multiply-adds: about a minute. The pass loops
#: in Python over the kernel's offsets and the pool window's, each loop step costing about
#: OFFSET_COST multiply-adds on top of the cells it covers (see check_pass_size).
MAX_WORK = 10**11
OFFSET_COST = 100_000


def shape_text(dims, scalar: str = "scalar") -> str:
    """(3, 3) -> '3×3'; no dimensions -> ``scalar``."""
    return "×".join(str(n) for n in dims) if len(dims) else scalar


def _array(key: str, value) -> np.ndarray:
    try:
        given = np.asarray(value)
        # Strings and booleans would convert ("1" -> 1.0, True -> 1.0); numbers only.
        if given.dtype.kind not in "iuf":
            raise TypeError
        with np.errstate(over="ignore"):  # a longdouble past float64 becomes inf, refused below
            array = np.asarray(given, dtype=np.float64)  # no second copy of a float64 dataset
    except (TypeError, ValueError):
        raise InputError("expected numbers in a rectangular array", key=key) from None
    if not np.all(np.isfinite(array)):
        raise InputError("expected finite numbers, found NaN or infinity", key=key)
    return array


def _number_text(value) -> str:
    """A number from the input as a message quotes it; an integer too long to read (one of
    hundreds of digits) by its order of magnitude."""
    if isinstance(value, Integral) and abs(value) >= 10**18:
        return f"about {'-' if value < 0 else ''}10^{int(abs(int(value)).bit_length() * math.log10(2))}"
    return repr(value)


def _finite(value: Real) -> bool:
    """Whether ``value`` is a finite float64 (an integer too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _size(key: str, value, minimum: int) -> int:
    """A whole number >= minimum (an integral float such as 2.0 counts as 2)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"expected a whole number, got {value!r}", key=key)
    if not isinstance(value, Integral) and not (math.isfinite(value) and float(value).is_integer()):
        raise InputError(f"expected a whole number, got {value!r}", key=key)
    if value < minimum:
        raise InputError(f"must be at least {minimum}, got {_number_text(int(value))}", key=key)
    return int(value)


def _vector(key: str, array: np.ndarray, length: int, what: str) -> np.ndarray:
    """Accept a number (when length is 1), a list of ``length``, or a ``length``×1 / 1×``length``
    matrix, and return it as a flat vector."""
    fits = (
        (array.ndim == 0 and length == 1)
        or (array.ndim == 1 and array.shape[0] == length)
        or (array.ndim == 2 and array.shape in ((length, 1), (1, length)))
    )
    if not fits:
        found = f"{array.size} entries" if array.ndim else "a number"
        raise InputError(f"expected {length} {what}, found {found} (shape {shape_text(array.shape)})", key=key)
    return array.reshape(length)


def _binary(n: int) -> str:
    """1.5e9 bytes -> '1.4 GiB'; an absurd number of bytes by its order of magnitude."""
    if n >= 2**40 * 10**18:
        return f"{_number_text(n // 2**40).removeprefix('about ')} TiB"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


def _dims_text(*dims: int) -> str:
    return "×".join(_number_text(n) for n in dims)


def check_pass_size(
    images: int, filters: int, image: tuple[int, int], kernel: tuple[int, int],
    stride: int = 1, padding: int = 0, pool: int = 2, pool_stride: int | None = None,
    key: str = "X",
) -> None:
    """Refuse, before any work, a pass on ``images`` images that would need more memory
    than MAX_PASS_BYTES or more work than MAX_WORK; InputError naming ``key`` (or padding,
    or pool, when that is what makes it so large).

    The estimate counts what a traced pass keeps per image: the image and its gradient,
    padded and not (4), five maps of Z1's size (Z1, A1, dA1/dZ1, dL/dA1, dL/dZ1) and two
    more of working copies, and four of P1's size (P1, F, dL/dP1, dL/dF). Sizes are
    Python ints, so an absurd input cannot overflow the arithmetic.
    """
    (H, W), (kh, kw) = image, kernel
    Hpad, Wpad = H + 2 * padding, W + 2 * padding
    Ho, Wo = output_size(Hpad, kh, stride), output_size(Wpad, kw, stride)
    pool_stride = pool if pool_stride is None else pool_stride
    Hp, Wp = max(output_size(Ho, pool, pool_stride), 0), max(output_size(Wo, pool, pool_stride), 0)
    per_image = 2 * Hpad * Wpad + 2 * H * W + 7 * filters * Ho * Wo + 4 * filters * Hp * Wp
    need = 8 * images * per_image
    convolution = kh * kw * (OFFSET_COST + images * filters * Ho * Wo)
    pooling = pool * pool * (OFFSET_COST + images * filters * Hp * Wp)
    work = convolution + pooling
    if need <= MAX_PASS_BYTES and work > MAX_WORK and pooling > convolution:
        key = "pool"
    elif padding and Hpad * Wpad > 4 * H * W and (need > MAX_PASS_BYTES or work > MAX_WORK):
        key = "padding"
    what = (
        f"{images} image{'s' * (images > 1)} of {_dims_text(H, W)}"
        + (f" padded by {_number_text(padding)}" if padding else "")
        + f", {_number_text(filters)} {_dims_text(kh, kw)} filter{'s' * (filters > 1)}: "
        + f"Z1 is {_dims_text(Ho, Wo)}"
        + (" per image and filter" if images * filters > 1 else "")
    )
    if need > MAX_PASS_BYTES:
        raise InputError(
            f"too large: {what}, and the pass would need about {_binary(need)} of memory; "
            f"cnntrace allows {_binary(MAX_PASS_BYTES)}",
            key=key,
        )
    if work > MAX_WORK:
        amount = _number_text(work) if work >= 10**18 else f"{work:.2g}"
        raise InputError(
            f"too large: {what}{f', a {_dims_text(pool, pool)} pool window' if key == 'pool' else ''}, "
            f"and the pass would take about {amount} multiply-adds; cnntrace allows "
            f"{MAX_WORK:.0e}, about a minute",
            key=key,
        )


@dataclass(frozen=True)
class Problem:
    """The inputs of one pass, as the user gave them (float64 arrays) and validated.

    X: (H, W) or (M, H, W).  Y: a number or M numbers in [0, 1].
    W1: (kh, kw) or (K, kh, kw).  B1: a number or K numbers.
    W2: n numbers, n×1 or 1×n, with n = K·Hp·Wp.  B2: a number.
    """

    X: np.ndarray
    Y: np.ndarray
    W1: np.ndarray
    B1: np.ndarray
    W2: np.ndarray
    B2: np.ndarray
    stride: int = 1
    padding: int = 0
    pool: int = 2
    pool_stride: int = 2
    lr: float = 0.1

    @classmethod
    def build(cls, X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1):
        """Check every value and return the Problem; raise InputError naming the key."""
        stride = _size("stride", stride, 1)
        padding = _size("padding", padding, 0)
        pool = _size("pool", pool, 1)
        pool_stride = pool if pool_stride is None else _size("pool_stride", pool_stride, 1)
        if isinstance(lr, bool) or not isinstance(lr, Real) or not _finite(lr) or lr <= 0:
            raise InputError(f"expected a positive number, got {_number_text(lr)}", key="lr")

        X, Y, W1, B1, W2, B2 = (
            _array(key, value)
            for key, value in zip(("X", "Y", "W1", "B1", "W2", "B2"), (X, Y, W1, B1, W2, B2))
        )
        if X.ndim not in (2, 3) or 0 in X.shape:
            raise InputError(
                f"expected an H×W image or an M×H×W batch, got shape {shape_text(X.shape)}", key="X"
            )
        if W1.ndim not in (2, 3) or 0 in W1.shape:
            raise InputError(
                f"expected a kh×kw filter or K×kh×kw filters, got shape {shape_text(W1.shape)}", key="W1"
            )
        M = X.shape[0] if X.ndim == 3 else 1
        K = W1.shape[0] if W1.ndim == 3 else 1

        H, W = X.shape[-2] + 2 * padding, X.shape[-1] + 2 * padding
        kh, kw = W1.shape[-2:]
        if kh > H or kw > W:
            raise InputError(
                f"the {kh}×{kw} kernel is larger than the {H}×{W} padded image "
                f"(X is {shape_text(X.shape[-2:])}, padding {padding})",
                key="W1",
            )
        Z1_shape = (output_size(H, kh, stride), output_size(W, kw, stride))
        if pool > min(Z1_shape):
            side = _number_text(pool)
            raise InputError(
                f"the {side}×{side} pool window is larger than Z1 ({shape_text(Z1_shape)})", key="pool"
            )
        # One image must fit; a whole batch is checked by the pass that holds it at once.
        check_pass_size(1, K, X.shape[-2:], (kh, kw), stride, padding, pool, pool_stride, key="W1" if K > 1 else "X")
        P1_shape = tuple(output_size(n, pool, pool_stride) for n in Z1_shape)
        n = K * P1_shape[0] * P1_shape[1]

        _vector("B1", B1, K, "bias" if K == 1 else "biases, one per filter")
        _vector("B2", B2, 1, "number")
        per_entry = f"one per entry of F ({K} filter{'s' * (K > 1)} × {shape_text(P1_shape)})"
        _vector("W2", W2, n, f"weight{'s' * (n > 1)}, {per_entry}")
        if X.ndim == 3 and not (Y.ndim == 1 and Y.shape[0] == M):
            raise InputError(f"expected a list of {M} labels, one per image of X, found shape {shape_text(Y.shape)}", key="Y")
        _vector("Y", Y, M, "label")
        if np.any((Y < 0) | (Y > 1)):
            bad = Y.flat[np.argmax((Y.ravel() < 0) | (Y.ravel() > 1))]
            raise InputError(f"labels must lie in [0, 1], found {float(bad)!r}", key="Y")

        return cls(X, Y, W1, B1, W2, B2, stride, padding, pool, pool_stride, float(lr))

    def check_size(self, images: int | None = None) -> None:
        """Refuse, before any work, a pass on ``images`` of the images (all by default)
        that is too large (see check_pass_size)."""
        check_pass_size(
            self.M if images is None else min(images, self.M), self.K, self.X.shape[-2:],
            self.W1.shape[-2:], self.stride, self.padding, self.pool, self.pool_stride,
        )  # fmt: skip

    # -- the general shapes the pass works on, and back --------------------------------

    @property
    def batched(self) -> bool:
        return self.X.ndim == 3

    @property
    def multi_filter(self) -> bool:
        return self.W1.ndim == 3

    @property
    def M(self) -> int:
        return self.X.shape[0] if self.batched else 1

    @property
    def K(self) -> int:
        return self.W1.shape[0] if self.multi_filter else 1

    def general(self):
        """X (M, H, W), Y (M,), W1 (K, kh, kw), B1 (K,), W2 (n,), B2 () as new arrays."""
        return (
            self.X.reshape(self.M, *self.X.shape[-2:]).copy(),
            self.Y.reshape(self.M).copy(),
            self.W1.reshape(self.K, *self.W1.shape[-2:]).copy(),
            self.B1.reshape(self.K).copy(),
            self.W2.reshape(-1).copy(),
            self.B2.reshape(()).copy(),
        )

    def present(self, kind: str, array: np.ndarray) -> np.ndarray:
        """Put a result of the general pass back into the shape the user gave.

        kind is "map" (M, K, h, w), "flat" (M, n), "batch" (M,), "scalar", or the name of
        an input (X, Y, W1, B1, W2, B2) whose given shape the result takes.
        """
        array = np.asarray(array)
        if kind in ("X", "Y", "W1", "B1", "W2", "B2"):
            return array.reshape(getattr(self, kind).shape)
        if kind == "scalar":
            return array.reshape(())
        axes = {"map": 2, "flat": 1, "batch": 0}[kind]
        keep = array.shape[-axes:] if axes else ()
        if kind == "map" and self.multi_filter:
            keep = (self.K, *keep)
        if self.batched:
            keep = (self.M, *keep)
        return array.reshape(keep)

    def leading_axes(self, kind: str) -> tuple[str, ...]:
        """The labels of the axes that index images or filters in a presented result."""
        if kind == "map":
            return ("image",) * self.batched + ("filter",) * self.multi_filter
        if kind in ("flat", "X"):
            return ("image",) * self.batched
        if kind == "W1":
            return ("filter",) * self.multi_filter
        return ()

    def axis_names(self, kind: str, ndim: int) -> tuple[str, ...]:
        """A name for every axis of a presented result: its image / filter axes, then "row"
        and "col" for a matrix or "col" for a vector. A per-image vector (Z2, A2, ...) of a
        batch is indexed by image."""
        if kind == "batch" and self.batched:
            return ("image",)
        leading = self.leading_axes(kind)
        trailing = {0: (), 1: ("col",), 2: ("row", "col")}[ndim - len(leading)]
        return leading + trailing
