"""Reading ``nn.Module`` s into certify's chain of affine maps and piecewise-linear activations.

The walk keeps the affine map since the last activation (``pending``) and the shape of the
values it produces (``(d,)`` or an image ``(C, H, W)``, flattened C-major as ``nn.Flatten``
does); every linear module is folded into it, every activation closes a layer:

* ``Conv2d`` is a :class:`~attractor.certify.operators.Conv`; eval-mode ``BatchNorm2d`` a 1x1
  convolution, folded into the convolution before it (a channel mixing composes with a
  convolution into a convolution); ``AvgPool2d`` / ``AdaptiveAvgPool2d`` a convolution with a
  constant kernel (or, for uneven adaptive windows, the exact dense matrix); ``Flatten`` the
  identity on the flattened values.
* ``MaxPool2d`` is an exact ReLU network: gather each window's ``k`` values (a convolution
  with one-hot kernels), then ``max(a, b) = b + relu(a - b)`` pairwise in ``ceil(log2 k)``
  layers, each keeping ``b`` in an identity unit (slope 1). The bounds then relax only the
  ``relu(a - b)`` units, as they would any ReLU.
* A residual block ``relu(body(x) + shortcut(x))`` (:class:`~attractor.tasks.conv_models.
  BasicBlock`, and the stem / stages / head of :class:`~attractor.tasks.conv_models.ResNet`)
  runs the body's layers with the shortcut's output carried beside them in identity units
  (slope 1), and adds the two in the affine map after the body: a chain again, so every
  bound method applies unchanged. Identity units are exact in every relaxation.

After folding, each layer's weight becomes a dense matrix where it fits in ``dense_bytes``
and stays structured otherwise (:func:`~attractor.certify.operators.compact`).

References:
    He et al. 2016, "Deep residual learning for image recognition" (the residual blocks);
    Xu et al. 2020, "Automatic perturbation analysis for scalable certified robustness and
    beyond" (auto_LiRPA: max pooling and residual additions in linear bound propagation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attractor.certify.operators import (
    DENSE_BYTES,
    FOLD_BYTES,
    Block,
    Conv,
    Identity,
    Weight,
    compact,
    compose,
    dense,
    forward,
)
from attractor.errors import UserError
from attractor.tasks.conv_models import BasicBlock, ResNet

SUPPORTED = (
    "Linear, Conv2d (zero padding), ReLU, LeakyReLU (slope in [0, 1]), BatchNorm1d/2d (eval), "
    "AvgPool2d, AdaptiveAvgPool2d, MaxPool2d (no padding), Flatten, Identity, Dropout, nested "
    "Sequential, and the ResNet / BasicBlock of attractor.tasks.conv_models"
)

#: One layer: ``(weight [out, in], bias [out], slope [out])``.
Chain = list[tuple[Weight, Tensor, Tensor]]


def convert(
    model: nn.Module, in_shape: tuple[int, ...] | None, dense_bytes: int = DENSE_BYTES
) -> tuple[Chain, tuple[int, ...]]:
    """``model`` as a chain of layers, and one input's shape (from ``in_shape`` or the first
    Linear layer).

    Raises:
        UserError: see :func:`attractor.certify.network.to_network`.
    """
    builder = _Builder(tuple(in_shape) if in_shape is not None else None, dense_bytes)
    builder.walk(model)
    if builder.in_shape is None or not (builder.layers or builder.pending):
        raise UserError("the network has no Linear layer; certify needs at least one")
    builder.activate(torch.ones(_numel(builder.shape), dtype=torch.float64))
    return builder.layers, builder.in_shape


class _Builder:
    """The walk's state: finished layers, the pending affine map, the current values' shape."""

    def __init__(self, shape: tuple[int, ...] | None, dense_bytes: int) -> None:
        self.layers: Chain = []
        self.pending: tuple[Weight, Tensor] | None = None  # since the last activation
        self.shape = shape  # of the values `pending` produces (None: flat, size not yet known)
        self.in_shape = shape
        self.dense_bytes = dense_bytes

    def walk(self, module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            for child in module:
                self.walk(child)
        elif isinstance(module, ResNet):  # forward: head(stages(stem(x)))
            for child in (module.stem, module.stages, module.head):
                self.walk(child)
        elif isinstance(module, BasicBlock):
            body = [module.conv1, module.bn1, nn.ReLU(), module.conv2, module.bn2]
            self.residual(body, module.shortcut)
            self.activate(torch.zeros(_numel(self.shape), dtype=torch.float64))
        elif isinstance(module, nn.ReLU | nn.LeakyReLU):
            self.activation(module)
        elif isinstance(module, nn.MaxPool2d):
            self.max_pool(module)
        elif isinstance(module, nn.Flatten):
            self.flatten(module)
        elif not isinstance(module, nn.Identity | nn.Dropout):
            weight, bias, shape = self.linear(module)
            self.affine(weight, bias, shape)

    def affine(self, weight: Weight, bias: Tensor, shape: tuple[int, ...]) -> None:
        """Fold ``values -> weight values + bias`` (now of ``shape``) into the pending map."""
        if self.pending is not None:
            inner, inner_bias = self.pending
            weight, bias = (
                compose(weight, inner),
                forward(weight, inner_bias) + bias,
            )
        self.pending, self.shape = (weight, bias), shape

    def activate(self, slope: Tensor) -> None:
        """Close a layer: the pending map (identity if none), then ``max(z, slope z)``."""
        weight, bias = self._pending()
        self.layers.append((compact(weight, self.dense_bytes), bias, slope))
        self.pending = None

    def activation(self, module: nn.ReLU | nn.LeakyReLU) -> None:
        slope = module.negative_slope if isinstance(module, nn.LeakyReLU) else 0.0
        if not 0.0 <= slope <= 1.0:
            raise UserError(
                f"LeakyReLU slope {slope} is outside [0, 1]; certify supports only slopes in [0, 1]"
            )
        if self.shape is None:
            raise UserError(
                "the network must start with a Linear layer before any activation (certify), or "
                "be given its input shape"
            )
        self.activate(torch.full((_numel(self.shape),), float(slope), dtype=torch.float64))

    def flatten(self, module: nn.Flatten) -> None:
        if (module.start_dim, module.end_dim) != (1, -1):
            raise UserError("certify supports only nn.Flatten() over all but the batch dimension")
        if self.shape is not None:  # the values are kept flattened already
            self.shape = (_numel(self.shape),)

    def linear(self, module: nn.Module) -> tuple[Weight, Tensor, tuple[int, ...]]:
        """``(weight, bias, out shape)`` of a linear module on the current values."""
        if isinstance(module, nn.Linear):
            if self.shape is None:
                self.shape = self.in_shape = (module.in_features,)
            if self.shape != (module.in_features,):
                raise UserError(
                    f"a Linear layer of {module.in_features} inputs reads values of shape "
                    f"{self.shape}; certify needs nn.Flatten before a Linear layer on images"
                )
            return (*_linear(module), (module.out_features,))
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            return self.batch_norm(module)
        if isinstance(module, nn.Conv2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            if self.shape is None or len(self.shape) != 3:
                raise UserError(
                    f"a {type(module).__name__} needs image values [C, H, W], got "
                    f"{self.shape or 'an unknown shape'}: pass the input shape (in_shape)"
                )
            weight, bias = (
                _conv(module, self.shape)
                if isinstance(module, nn.Conv2d)
                else _avg_pool(module, self.shape)
            )
            return weight, bias, _out_shape(weight, module, self.shape)
        raise UserError(
            f"certify cannot bound a {type(module).__name__} module; supported: {SUPPORTED}"
        )

    def batch_norm(
        self, module: nn.BatchNorm1d | nn.BatchNorm2d
    ) -> tuple[Weight, Tensor, tuple[int, ...]]:
        if module.training or module.running_mean is None or module.running_var is None:
            raise UserError(
                f"certify needs {type(module).__name__} in eval mode with running statistics: "
                "call model.eval() first"
            )
        scale = 1.0 / torch.sqrt(module.running_var.detach().to(torch.float64) + module.eps)
        shift = -module.running_mean.detach().to(torch.float64) * scale
        if module.affine:
            gamma, beta = (p.detach().to(torch.float64) for p in (module.weight, module.bias))
            scale, shift = scale * gamma, shift * gamma + beta
        shape = self.shape
        if isinstance(module, nn.BatchNorm1d):
            if shape is None or len(shape) != 1:
                raise UserError(f"certify supports BatchNorm1d on flat values, got shape {shape}")
            return torch.diag(scale), shift, shape
        if shape is None or len(shape) != 3:
            raise UserError(f"BatchNorm2d needs image values [C, H, W], got {shape}")
        # A 1x1 convolution, so that it folds into the convolution before it.
        kernel = torch.diag(scale)[:, :, None, None]
        return Conv(kernel, shape), shift.repeat_interleave(shape[1] * shape[2]), shape

    def max_pool(self, module: nn.MaxPool2d) -> None:
        """Exact ReLU network of the max over each window (see the module docstring)."""
        if self.shape is None or len(self.shape) != 3:
            raise UserError(f"MaxPool2d needs image values [C, H, W], got {self.shape}")
        if _pair(module.padding) != (0, 0) or module.ceil_mode or module.return_indices:
            raise UserError(
                "certify supports MaxPool2d without padding, ceil_mode or return_indices"
            )
        channels = self.shape[0]
        kh, kw = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        window = kh * kw
        gather = torch.zeros(channels * window, channels, kh, kw, dtype=torch.float64)
        for c in range(channels):
            for j in range(window):
                gather[c * window + j, c, j // kw, j % kw] = 1.0
        conv = Conv(gather, self.shape, stride, (0, 0), _pair(module.dilation))
        out = conv.out_shape
        self.affine(conv, torch.zeros(_numel(out), dtype=torch.float64), out)
        pixels, values = out[1] * out[2], window
        while values > 1:
            pairs, odd = divmod(values, 2)
            units = 2 * pairs + odd
            # Units per pair (a, b): a - b (ReLU), b (identity); an odd value left is kept.
            level, merge = torch.zeros(units, values), torch.zeros(pairs + odd, units)
            slopes = [0.0, 1.0] * pairs + [1.0] * odd
            for i in range(pairs):
                level[2 * i, 2 * i], level[2 * i, 2 * i + 1], level[2 * i + 1, 2 * i + 1] = 1, -1, 1
                merge[i, 2 * i] = merge[i, 2 * i + 1] = 1  # max(a, b) = relu(a - b) + b
            if odd:
                level[-1, -1], merge[-1, -1] = 1, 1
            self._pointwise(level, (channels * units, out[1], out[2]))
            slope = torch.tensor(slopes, dtype=torch.float64).repeat(channels)
            self.activate(slope.repeat_interleave(pixels))
            self._pointwise(merge, (channels * (pairs + odd), out[1], out[2]))
            values = pairs + odd

    def residual(self, body: list[nn.Module], shortcut: nn.Module) -> None:
        """``body(x) + shortcut(x)`` of the current values ``x`` (the final ReLU is the caller's).

        The shortcut's output rides beside the body's layers in identity units (slope 1).
        """
        skip = _Builder(self.shape, self.dense_bytes)
        skip.pending = self.pending
        skip.walk(shortcut)
        if skip.layers:
            raise UserError("certify supports residual shortcuts without activations only")
        skip_w, skip_b = skip._pending()
        branch = _Builder(self.shape, self.dense_bytes)
        branch.pending = self.pending
        for module in body:
            branch.walk(module)
        if branch.shape != skip.shape:
            raise UserError(
                f"a residual block adds values of shapes {branch.shape} and {skip.shape}"
            )
        shape = skip.shape
        assert shape is not None
        width = _numel(shape)
        ones, zeros = (
            torch.ones(width, dtype=torch.float64),
            torch.zeros(width, dtype=torch.float64),
        )
        out_w, out_b = branch._pending()
        if not branch.layers:  # an affine body: one affine map, the sum of both
            total = dense(out_w) + dense(skip_w)
            self.pending, self.shape = (total, out_b + skip_b), shape
            return
        previous = branch.layers[0][0].shape[1]  # the width of the values both read
        for k, (weight, bias, slope) in enumerate(branch.layers):
            rows = (weight.shape[0], width)
            if k == 0:  # the body's first layer and the skip read the same values
                carried = Block(((weight,), (skip_w,)), rows, (previous,))
                layer = (carried, torch.cat([bias, skip_b]), torch.cat([slope, ones]))
            else:
                carried = Block(((weight, None), (None, Identity(width))), rows, (previous, width))
                layer = (carried, torch.cat([bias, zeros]), torch.cat([slope, ones]))
            self.layers.append((compact(layer[0], self.dense_bytes), layer[1], layer[2]))
            previous = weight.shape[0]
        self.pending = (Block(((out_w, Identity(width)),), (width,), (previous, width)), out_b)
        self.shape = shape

    def _pointwise(self, matrix: Tensor, shape: tuple[int, ...]) -> None:
        """Fold a per-pixel mixing of each channel's values (``matrix [out, in]``) into pending."""
        assert self.shape is not None
        channels = self.shape[0] // matrix.shape[1]
        kernel = torch.kron(torch.eye(channels), matrix).to(torch.float64)[:, :, None, None]
        self.affine(
            Conv(kernel, self.shape),  # type: ignore[arg-type]
            torch.zeros(_numel(shape), dtype=torch.float64),
            shape,
        )

    def _pending(self) -> tuple[Weight, Tensor]:
        if self.pending is not None:
            return self.pending
        width = _numel(self.shape or ())
        return Identity(width), torch.zeros(width, dtype=torch.float64)


def _linear(module: nn.Linear) -> tuple[Tensor, Tensor]:
    weight = module.weight.detach().to(torch.float64).clone()
    bias = (
        module.bias.detach().to(torch.float64).clone()
        if module.bias is not None
        else torch.zeros(weight.shape[0], dtype=torch.float64)
    )
    return weight, bias


def _conv(module: nn.Conv2d, shape: tuple[int, ...]) -> tuple[Conv, Tensor]:
    if module.padding_mode != "zeros":
        raise UserError(f"certify supports Conv2d with zero padding, not {module.padding_mode!r}")
    if shape[0] != module.in_channels:
        raise UserError(
            f"a Conv2d of {module.in_channels} input channels reads values of shape {shape}"
        )
    kernel = module.weight.detach().to(torch.float64)
    kh, kw = kernel.shape[2:]
    dilation = _pair(module.dilation)
    padding = module.padding
    if isinstance(padding, str):
        total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        if padding == "same" and any(t % 2 for t in total):
            raise UserError("certify supports padding='same' only with odd (dilated) kernels")
        padding = (0, 0) if padding == "valid" else (total[0] // 2, total[1] // 2)
    if module.groups > 1:  # unrolled into a block-diagonal kernel
        per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
        full = torch.zeros(module.out_channels, module.in_channels, kh, kw, dtype=torch.float64)
        for g in range(module.groups):
            full[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = kernel[
                g * per_out : (g + 1) * per_out
            ]
        kernel = full
    conv = Conv(kernel.clone(), shape, _pair(module.stride), _pair(padding), dilation)  # type: ignore[arg-type]
    out = conv.out_shape
    bias = (
        module.bias.detach().to(torch.float64).repeat_interleave(out[1] * out[2])
        if module.bias is not None
        else torch.zeros(_numel(out), dtype=torch.float64)
    )
    return conv, bias


def _avg_pool(
    module: nn.AvgPool2d | nn.AdaptiveAvgPool2d, shape: tuple[int, ...]
) -> tuple[Weight, Tensor]:
    channels, height, width = shape
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = _pair(module.output_size)
        oh, ow = (height if size[0] is None else size[0]), (width if size[1] is None else size[1])
        if height % oh or width % ow:
            matrix = _probe(module, shape)  # uneven windows: no single kernel
            return matrix, torch.zeros(matrix.shape[0], dtype=torch.float64)
        kernel_size = stride = (height // oh, width // ow)
        padding = (0, 0)
    else:
        if module.ceil_mode or module.divisor_override is not None:
            raise UserError("certify supports AvgPool2d without ceil_mode or divisor_override")
        kernel_size = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        padding = _pair(module.padding)
        if padding != (0, 0) and not module.count_include_pad:
            matrix = _probe(module, shape)  # padding excluded from the mean: uneven weights
            return matrix, torch.zeros(matrix.shape[0], dtype=torch.float64)
    kh, kw = kernel_size
    kernel = torch.zeros(channels, channels, kh, kw, dtype=torch.float64)
    kernel[torch.arange(channels), torch.arange(channels)] = 1.0 / (kh * kw)
    conv = Conv(kernel, shape, stride, padding)  # type: ignore[arg-type]
    return conv, torch.zeros(_numel(conv.out_shape), dtype=torch.float64)


def _probe(module: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """The exact matrix ``[out, in]`` of a linear, bias-free module: its images of the unit
    vectors.
    """
    d = _numel(shape)
    out = _numel(tuple(module(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:]))
    if 8 * d * max(d, out) > FOLD_BYTES:
        raise UserError(f"certify would need a dense {out}x{d} matrix for {type(module).__name__}")
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return module(basis).reshape(d, out).T.contiguous()


def _out_shape(weight: Weight, module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(weight, Conv):
        return weight.out_shape
    out = module(torch.zeros(1, *shape, dtype=torch.float64))
    return tuple(out.shape[1:])


def _pair(value: object) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)  # type: ignore[return-value]


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for s in shape or ():
        n *= s
    return n
