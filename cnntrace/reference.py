"""The seeds' network, written as the list of layers it is:

    X → Z1 = conv(X, W1) + B1 → A1 = ReLU(Z1) → P1 = MaxPool(A1) → F = flatten(P1)
      → Z2 = F·W2 + B2 → A2 = σ(Z2) → L = BCE(Y, A2)

An input file without ``layers`` describes this network; its top-level stride, padding,
pool and pool_stride are the conv's and the max-pool's options.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnntrace import limits
from cnntrace.checks import as_array, positive_number, vector, whole_number
from cnntrace.errors import InputError
from cnntrace.layers.activation import ReLU, Sigmoid
from cnntrace.layers.conv import Conv
from cnntrace.layers.dense import Dense
from cnntrace.layers.flatten import Flatten
from cnntrace.layers.pool import MaxPool
from cnntrace.losses import BCE
from cnntrace.network import Network, place
from cnntrace.ops import output_size
from cnntrace.problem import Problem
from cnntrace.text import number_text, shape_text

#: The names the derivation gives the reference network's matrices, in the order it makes them.
NAMES = ("Z1", "A1", "P1", "F", "Z2", "A2")
#: The keys the reference form writes each layer's options under.
CONV_KEYS = (("stride", "stride"), ("padding", "padding"))
POOL_KEYS = (("size", "pool"), ("stride", "pool_stride"))


@dataclass(frozen=True)
class ReferenceOptions:
    """The reference form's top-level options."""

    stride: int = 1
    padding: int = 0
    pool: int = 2
    pool_stride: int = 2

    def summary(self) -> str:
        return (f"stride {self.stride}, padding {self.padding}, pool {self.pool}×{self.pool} with "
                f"stride {self.pool_stride}")  # fmt: skip

    def check_size(self, problem: Problem, images: int, keep: int = 0, doing: str = "the pass") -> None:
        """The reference form's size guard (see check_pass_size) on ``images`` images,
        ``keep`` bytes more kept (the weights' copies)."""
        check_pass_size(*self._shapes(problem, images), keep=keep, doing=doing)

    def size(self, problem: Problem, images: int) -> tuple[int, int]:
        """(bytes, multiply-adds) of a pass on ``images`` images (see pass_size)."""
        need, work, *_ = pass_size(*self._shapes(problem, images))
        return need, work

    def _shapes(self, problem: Problem, images: int) -> tuple:
        W1 = problem.inputs["W1"]
        K = W1.shape[0] if W1.ndim == 3 else 1
        return (images, K, problem.X.shape[-2:], W1.shape[-2:], self.stride, self.padding,
                self.pool, self.pool_stride)  # fmt: skip


def reference_network(options: ReferenceOptions = ReferenceOptions()) -> Network:
    """conv → relu → maxpool → flatten → dense → sigmoid, loss bce."""
    stride, padding = (options.stride,) * 2, (options.padding,) * 2
    pool, pool_stride = (options.pool,) * 2, (options.pool_stride,) * 2
    layers = place(
        [
            Conv(stride=stride, padding=padding),  # Z1 = conv(X, W1) + B1
            ReLU(),  # A1 = ReLU(Z1)
            MaxPool(size=pool, stride=pool_stride),  # P1 = MaxPool(A1)
            Flatten(),  # F = flatten(P1)
            Dense(_one_output=True),  # Z2 = F·W2 + B2
            Sigmoid(),  # A2 = σ(Z2)
        ],
        ["W1", "W1", "pool", "W2", "W2", "W2"],
    )
    assert tuple(layer.output for layer in layers) == NAMES
    # Errors about the conv's and the pool's options name the reference form's own keys.
    option_keys = (CONV_KEYS, (), POOL_KEYS, (), (), ())
    layers = tuple(replace(layer, place=replace(layer.place, option_keys=keys))
                   for layer, keys in zip(layers, option_keys))  # fmt: skip
    return Network(layers, BCE("A2", "Z2"))


def reference_problem(X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1) -> Problem:
    """The reference network's problem: check every value and return it; InputError naming
    the key."""
    stride = whole_number("stride", stride, 1)
    padding = whole_number("padding", padding, 0)
    pool = whole_number("pool", pool, 1)
    pool_stride = pool if pool_stride is None else whole_number("pool_stride", pool_stride, 1)
    lr = positive_number("lr", lr)
    arrays = dict(zip(("X", "Y", "W1", "B1", "W2", "B2"), (X, Y, W1, B1, W2, B2)))
    arrays = {key: as_array(key, value) for key, value in arrays.items()}
    X, W1 = arrays["X"], arrays["W1"]
    if X.ndim not in (2, 3) or 0 in X.shape:
        raise InputError(
            f"expected an H×W image or an M×H×W batch, got shape {shape_text(X.shape)}", key="X"
        )
    if W1.ndim not in (2, 3) or 0 in W1.shape:
        raise InputError(
            f"expected a kh×kw filter or K×kh×kw filters, got shape {shape_text(W1.shape)}", key="W1"
        )
    options = ReferenceOptions(stride, padding, pool, pool_stride)
    K = W1.shape[0] if W1.ndim == 3 else 1
    # One image must fit; a whole batch is checked by the pass that holds it at once.
    H, W = X.shape[-2] + 2 * padding, X.shape[-1] + 2 * padding
    kh, kw = W1.shape[-2:]
    if kh <= H and kw <= W:  # else the conv layer says the kernel is too large
        Z1 = (output_size(H, kh, stride), output_size(W, kw, stride))
        if pool > min(Z1):  # the derivation's words: the window slides over Z1's cells
            side = number_text(pool)
            raise InputError(f"the {side}×{side} pool window is larger than Z1 ({shape_text(Z1)})", key="pool")
        check_pass_size(1, K, X.shape[-2:], (kh, kw), stride, padding, pool, pool_stride,
                        key="W1" if K > 1 else "X")  # fmt: skip
        # The reference form's order: the biases, then W2 (which the layers check first).
        vector("B1", arrays["B1"], K, "bias" if K == 1 else "biases, one per filter",
               f"W1 ({shape_text(W1.shape)}) has {K} filter{'s' * (K > 1)}")
        vector("B2", arrays["B2"], 1, "number")
    network = reference_network(options)
    return Problem.assemble(network, arrays["X"], arrays["Y"], arrays, lr, reference=options)


def reference_stages(batched: bool = False):
    """The reference network's stages, in the derivation's order, for one 6×6 image (or a
    batch): Z1, A1, P1, F, Z2, A2, L, dL_dA2 … dL_dX, W1, B1, W2, B2."""
    X = [[[0.0] * 6] * 6] * 2 if batched else [[0.0] * 6] * 6
    Y = [0.0, 1.0] if batched else 1.0
    return reference_problem(X, Y, [[0.0] * 3] * 3, 0.0, [0.0] * 4, 0.0).stages


def check_pass_size(
    images: int, filters: int, image: tuple[int, int], kernel: tuple[int, int],
    stride: int = 1, padding: int = 0, pool: int = 2, pool_stride: int | None = None,
    key: str = "X", keep: int = 0, doing: str = "the pass",
) -> None:
    """Refuse, before any work, a pass of the reference network on ``images`` images that
    would need more memory than limits.MAX_PASS_BYTES (with ``keep`` bytes more: the
    weights' copies) or more work than limits.MAX_WORK; InputError naming ``key`` (or
    padding, or pool, when that is what makes it so large). See pass_size."""
    need, work, key, what, pool_window = pass_size(images, filters, image, kernel, stride, padding, pool,
                                                   pool_stride, key, keep)  # fmt: skip
    limits.refuse(need, work, what, key, pool_window, doing=doing)


def pass_size(
    images: int, filters: int, image: tuple[int, int], kernel: tuple[int, int],
    stride: int = 1, padding: int = 0, pool: int = 2, pool_stride: int | None = None,
    key: str = "X", keep: int = 0,
) -> tuple[int, int, str, str, str | None]:
    """(bytes, multiply-adds, the key to name, what is done, the pool window when that is
    what makes it so large) of a pass of the reference network on ``images`` images.

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
    need = 8 * images * per_image + keep
    convolution = kh * kw * (limits.OFFSET_COST + images * filters * Ho * Wo)
    pooling = pool * pool * (limits.OFFSET_COST + images * filters * Hp * Wp)
    work = convolution + pooling
    if need <= limits.MAX_PASS_BYTES and work > limits.MAX_WORK and pooling > convolution:
        key = "pool"
    elif padding and Hpad * Wpad > 4 * H * W and (need > limits.MAX_PASS_BYTES or work > limits.MAX_WORK):
        key = "padding"
    what = (
        f"{images} image{'s' * (images > 1)} of {limits.dims_text(H, W)}"
        + (f" padded by {number_text(padding)}" if padding else "")
        + f", {number_text(filters)} {limits.dims_text(kh, kw)} filter{'s' * (filters > 1)}: "
        + f"Z1 is {limits.dims_text(Ho, Wo)}"
        + (" per image and filter" if images * filters > 1 else "")
    )
    return need, work, key, what, limits.dims_text(pool, pool) if key == "pool" else None


