"""The affine layers' linear maps: a dense matrix, or a structured operator applied without one.

A layer's weight is a ``Tensor [out, in]`` (dense) or a :class:`LinearMap`: a convolution
(applied by ``F.conv2d`` forwards and ``F.conv_transpose2d`` to the backward-propagated
coefficients, so a conv layer of a large image never becomes an ``[out, in]`` matrix), a
scaled identity (the skip connection carried through a residual block) or a block matrix of
those (two nets side by side, a residual block's body beside its skip). Every bound method
touches a weight only through the functions here: :func:`forward` (``x W^T``),
:func:`backward` (``lam W``), :func:`absolute` (``|W|`` entrywise), :func:`difference`
(``W_b - W_a``) and :func:`negate`, so a dense and a structured weight of the same map give
the same bounds up to float64 rounding.

``|W|`` of a convolution is the convolution with ``|kernel|``: each entry of the unrolled
matrix is one kernel entry or 0 (one input pixel meets one output pixel through at most one
kernel offset), so the entrywise absolute value is exact, as IBP and the concretization need.

:func:`compact` turns a structured map into its dense matrix where that fits in ``dense_bytes``
(dense matmuls beat convolutions at the sizes of the digits and MNIST models); the converter
chooses per layer, after folding.

References:
    Xu et al. 2020, "Automatic perturbation analysis for scalable certified robustness and
    beyond" (auto_LiRPA: bounds through operators without unrolled matrices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attractor.errors import UserError

#: Default largest weight made dense by choice, in bytes (float64): 16 MiB, a 2M-entry matrix.
DENSE_BYTES = 16 * 2**20
#: Largest dense matrix a fold may need (two linear modules with no structured product, e.g.
#: a Linear after a pooling): 256 MiB; above it the conversion refuses.
FOLD_BYTES = 256 * 2**20


class LinearMap:
    """A linear map ``R^in -> R^out`` (float64) that the bounds apply without a dense matrix."""

    shape: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., in] -> [..., out]`` (``x W^T``)."""
        raise NotImplementedError

    def backward(self, lam: Tensor) -> Tensor:
        """``lam [..., out] -> [..., in]`` (``lam W``)."""
        raise NotImplementedError

    def absolute(self) -> LinearMap:
        """The map of ``|W|`` (entrywise)."""
        raise NotImplementedError

    def scaled(self, factor: float) -> LinearMap:
        """The map of ``factor W``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Conv(LinearMap):
    """A 2-d convolution (zero padding) on images ``in_shape = (C, H, W)``, flattened C-major.

    ``kernel [O, C, kh, kw]`` (groups unrolled into a block-diagonal kernel).
    """

    kernel: Tensor
    in_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        kh, kw = self.kernel.shape[2:]
        size = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(
                (h, w), self.padding, self.dilation, (kh, kw), self.stride, strict=True
            )
        ]
        return (self.kernel.shape[0], size[0], size[1])

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return (_numel(self.out_shape), _numel(self.in_shape))

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution with stride 1 and no padding: a channel mixing at every pixel."""
        return (
            tuple(self.kernel.shape[2:]) == (1, 1)
            and self.stride == (1, 1)
            and self.padding == (0, 0)
        )

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = F.conv2d(
            x.reshape(-1, *self.in_shape),
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        return y.reshape(*lead, -1)

    def backward(self, lam: Tensor) -> Tensor:
        lead = lam.shape[:-1]
        out_c, out_h, out_w = self.out_shape
        _, h, w = self.in_shape
        # conv_transpose2d is the adjoint of conv2d; output_padding restores the rows and
        # columns the forward stride dropped at the far edge.
        extra = [
            n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
            for n, m, s, p, d, k in zip(
                (h, w),
                (out_h, out_w),
                self.stride,
                self.padding,
                self.dilation,
                self.kernel.shape[2:],
                strict=True,
            )
        ]
        x = F.conv_transpose2d(
            lam.reshape(-1, out_c, out_h, out_w),
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            output_padding=tuple(extra),
            dilation=self.dilation,
        )
        return x.reshape(*lead, -1)

    def absolute(self) -> Conv:
        return self._with(self.kernel.abs())

    def scaled(self, factor: float) -> Conv:
        return self._with(factor * self.kernel)

    def same_geometry(self, other: object) -> bool:
        return (
            isinstance(other, Conv)
            and self.kernel.shape == other.kernel.shape
            and (self.in_shape, self.stride, self.padding, self.dilation)
            == (other.in_shape, other.stride, other.padding, other.dilation)
        )

    def _with(self, kernel: Tensor) -> Conv:
        return Conv(kernel, self.in_shape, self.stride, self.padding, self.dilation)


@dataclass(frozen=True)
class Identity(LinearMap):
    """``factor * I`` on ``dim`` values (a carried skip connection, or its negative)."""

    dim: int
    factor: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return (self.dim, self.dim)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.factor == 1.0 else self.factor * x

    def backward(self, lam: Tensor) -> Tensor:
        return self.forward(lam)

    def absolute(self) -> Identity:
        return Identity(self.dim, abs(self.factor))

    def scaled(self, factor: float) -> Identity:
        return Identity(self.dim, factor * self.factor)


#: A weight: a dense matrix ``[out, in]`` or a structured map.
Weight = Tensor | LinearMap


@dataclass(frozen=True)
class Block(LinearMap):
    """A block matrix: ``blocks[i][j]`` maps input part ``j`` to output part ``i``; ``None`` is 0.

    ``rows`` and ``cols`` are the parts' sizes.
    """

    blocks: tuple[tuple[Weight | None, ...], ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        return (sum(self.rows), sum(self.cols))

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.cols, dim=-1)
        out = []
        for row, size in zip(self.blocks, self.rows, strict=True):
            terms = [forward(w, p) for w, p in zip(row, parts, strict=True) if w is not None]
            out.append(sum(terms[1:], terms[0]) if terms else x.new_zeros(*x.shape[:-1], size))
        return torch.cat(out, dim=-1)

    def backward(self, lam: Tensor) -> Tensor:
        parts = lam.split(self.rows, dim=-1)
        out = []
        for j, size in enumerate(self.cols):
            terms = [
                backward(row[j], p)
                for row, p in zip(self.blocks, parts, strict=True)
                if row[j] is not None
            ]
            out.append(sum(terms[1:], terms[0]) if terms else lam.new_zeros(*lam.shape[:-1], size))
        return torch.cat(out, dim=-1)

    def absolute(self) -> Block:  # the blocks do not overlap, so |W| is blockwise
        return self._map(absolute)

    def scaled(self, factor: float) -> Block:
        return self._map(lambda w: _scaled(w, factor))

    def _map(self, fn: Callable[[Weight], Weight]) -> Block:
        blocks = tuple(tuple(None if w is None else fn(w) for w in row) for row in self.blocks)
        return Block(blocks, self.rows, self.cols)


def forward(weight: Weight, x: Tensor) -> Tensor:
    """``x [..., in] W^T -> [..., out]``."""
    return x @ weight.T if isinstance(weight, Tensor) else weight.forward(x)


def backward(weight: Weight, lam: Tensor) -> Tensor:
    """``lam [..., out] W -> [..., in]``."""
    return lam @ weight if isinstance(weight, Tensor) else weight.backward(lam)


def absolute(weight: Weight) -> Weight:
    """``|W|`` entrywise."""
    return weight.abs() if isinstance(weight, Tensor) else weight.absolute()


def negate(weight: Weight) -> Weight:
    """``-W``."""
    return -weight if isinstance(weight, Tensor) else weight.scaled(-1.0)


def _scaled(weight: Weight, factor: float) -> Weight:
    return factor * weight if isinstance(weight, Tensor) else weight.scaled(factor)


def dense(weight: Weight) -> Tensor:
    """The matrix ``[out, in]`` of ``weight``."""
    if isinstance(weight, Tensor):
        return weight
    out, inp = weight.shape
    if isinstance(weight, Identity):
        return weight.factor * torch.eye(out, dtype=torch.float64)
    if isinstance(weight, Block):
        return torch.cat(
            [
                torch.cat(
                    [
                        dense(w) if w is not None else torch.zeros(r, c, dtype=torch.float64)
                        for w, c in zip(row, weight.cols, strict=True)
                    ],
                    dim=1,
                )
                for row, r in zip(weight.blocks, weight.rows, strict=True)
            ]
        )
    # The map applied to the smaller identity: W = I W (backward) or (I W^T)^T (forward).
    if out <= inp:
        return weight.backward(torch.eye(out, dtype=torch.float64))
    return weight.forward(torch.eye(inp, dtype=torch.float64)).T.contiguous()


def difference(weight_b: Weight, weight_a: Weight) -> Weight | None:
    """``W_b - W_a`` in the structure both share (``None`` where it is exactly 0).

    The difference is formed on the weights, not on their products with the coefficients, so
    a tiny change stays tiny instead of a cancellation of two large products.
    """
    if isinstance(weight_b, Tensor) and isinstance(weight_a, Tensor):
        return weight_b - weight_a
    if isinstance(weight_b, Conv) and weight_b.same_geometry(weight_a):
        assert isinstance(weight_a, Conv)
        return weight_b._with(weight_b.kernel - weight_a.kernel)
    if isinstance(weight_b, Identity) and isinstance(weight_a, Identity):
        factor = weight_b.factor - weight_a.factor
        return None if factor == 0 else Identity(weight_b.dim, factor)
    if (
        isinstance(weight_b, Block)
        and isinstance(weight_a, Block)
        and (weight_b.rows, weight_b.cols) == (weight_a.rows, weight_a.cols)
    ):
        blocks = tuple(
            tuple(_block_difference(wb, wa) for wb, wa in zip(row_b, row_a, strict=True))
            for row_b, row_a in zip(weight_b.blocks, weight_a.blocks, strict=True)
        )
        return Block(blocks, weight_b.rows, weight_b.cols)
    return dense(weight_b) - dense(weight_a)


def _block_difference(wb: Weight | None, wa: Weight | None) -> Weight | None:
    if wa is None:
        return wb
    if wb is None:
        return negate(wa)
    return difference(wb, wa)


def zero_or_backward(weight: Weight | None, lam: Tensor, width: int) -> Tensor:
    """``lam W`` ``[..., in]``, where ``None`` is the zero map onto ``width`` inputs."""
    return lam.new_zeros(*lam.shape[:-1], width) if weight is None else backward(weight, lam)


def same_structure(weight_a: Weight, weight_b: Weight) -> bool:
    """Whether two weights have the same shape and the same kind (dense, conv geometry, blocks)."""
    if tuple(weight_a.shape) != tuple(weight_b.shape):
        return False
    if isinstance(weight_a, Tensor) or isinstance(weight_b, Tensor):
        return isinstance(weight_a, Tensor) and isinstance(weight_b, Tensor)
    if isinstance(weight_a, Conv):
        return weight_a.same_geometry(weight_b)
    if isinstance(weight_a, Block) and isinstance(weight_b, Block):
        return (weight_a.rows, weight_a.cols) == (weight_b.rows, weight_b.cols) and all(
            (wa is None) == (wb is None) and (wa is None or same_structure(wa, wb))  # type: ignore[arg-type]
            for ra, rb in zip(weight_a.blocks, weight_b.blocks, strict=True)
            for wa, wb in zip(ra, rb, strict=True)
        )
    return type(weight_a) is type(weight_b)


def compose(outer: Weight, inner: Weight) -> Weight:
    """``outer @ inner`` (``inner`` first), structured where both are convolutions and one is a
    channel mixing (a folded BatchNorm, a max pooling's pairing), else dense.

    Raises:
        UserError: if the dense product would exceed :data:`FOLD_BYTES`.
    """
    if isinstance(inner, Identity):
        return _scaled(outer, inner.factor)
    if isinstance(outer, Identity):
        return _scaled(inner, outer.factor)
    if isinstance(outer, Conv) and isinstance(inner, Conv):
        if outer.pointwise:  # mixing the channels of each output pixel of `inner`
            kernel = torch.einsum("oc,cikl->oikl", outer.kernel[:, :, 0, 0], inner.kernel)
            return inner._with(kernel)
        if inner.pointwise:  # `outer` reads mixed channels: mix its kernel's input channels
            kernel = torch.einsum("ockl,ci->oikl", outer.kernel, inner.kernel[:, :, 0, 0])
            return Conv(kernel, inner.in_shape, outer.stride, outer.padding, outer.dilation)
    out, inp = outer.shape[0], inner.shape[1]
    if 8 * out * inp > FOLD_BYTES:
        raise UserError(
            f"certify would need a dense {out}x{inp} matrix to fold two linear modules; put an "
            "activation between them"
        )
    if isinstance(outer, Tensor):
        return backward(inner, outer)  # outer @ inner, row by row through inner's adjoint
    return forward(outer, dense(inner).T).T.contiguous()


def compact(weight: Weight, dense_bytes: int = DENSE_BYTES) -> Weight:
    """``weight`` as a dense matrix where that takes at most ``dense_bytes``, else structured (the
    blocks of a block matrix each compacted on their own).
    """
    if isinstance(weight, Tensor):
        return weight
    out, inp = weight.shape
    if 8 * out * inp <= dense_bytes:
        return dense(weight)
    if isinstance(weight, Block):
        return weight._map(lambda w: compact(w, dense_bytes))
    return weight


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
