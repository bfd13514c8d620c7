"""Torch implementations of the TensorFlow ops a TF.js graph model uses, with TensorFlow's semantics.

This module owns the op table: every op is a function ``(OpContext, inputs) -> output(s)`` registered under its
TensorFlow name(s) with ``_register``; :func:`supported_ops` lists them. The semantics follow TensorFlow: NHWC
layout, ``SAME`` padding with the odd pixel at the end, ``ResizeBilinear`` with ``align_corners`` /
``half_pixel_centers``, stable ``TopKV2``, ``StridedSlice`` with all five masks, and so on. The graph executor
(:mod:`.tfjs_graph`) looks ops up in ``_OPS``; reading the files is :mod:`.tfjs_format`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from metahmr_cli.keypoints.tfjs_format import GraphNode, TFJSGraphError, UnsupportedOpError, tf_dtype

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------------ op helpers


@dataclass
class OpContext:
    """What an op implementation sees besides its input tensors.

    Attributes:
        node: the node being evaluated.
        const_inputs: for each input, whether it is a constant of the graph (results may then be memoised).
        memo: per-node storage that lives as long as the graph on its device (e.g. a filter in torch layout).
        device: the device the graph runs on.
    """

    node: GraphNode
    const_inputs: tuple[bool, ...]
    memo: dict[str, Any]
    device: torch.device

    def attr(self, key: str, default: Any = None) -> Any:
        """An attribute of the node, or ``default``."""
        return self.node.attr.get(key, default)

    def unsupported(self, what: str) -> UnsupportedOpError:
        """An error naming this node and the unsupported setting."""
        return UnsupportedOpError(f"{self.node.op} node {self.node.name!r}: {what} is not supported")


OpFn = Callable[[OpContext, list[Tensor]], "Tensor | list[Tensor]"]
_OPS: dict[str, OpFn] = {}


def _register(*names: str) -> Callable[[OpFn], OpFn]:
    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            _OPS[name] = fn
        return fn

    return wrap


def supported_ops() -> frozenset[str]:
    """Names of the TensorFlow ops :class:`TFJSGraph` can run."""
    return frozenset(_OPS) | {"Const", "Placeholder"}


def _ints(t: Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _int(t: Tensor) -> int:
    return int(t.reshape(-1)[0].item())


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one spatial axis: (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial_padding(ctx: OpContext, hw: tuple[int, int], khw: tuple[int, int], strides: Sequence[int],
                     dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of an NHWC conv / pool node."""
    padding = ctx.attr("padding", "VALID")
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        top, bottom = same_padding(hw[0], khw[0], strides[0], dilations[0])
        left, right = same_padding(hw[1], khw[1], strides[1], dilations[1])
        return top, bottom, left, right
    if padding == "EXPLICIT":
        pads = list(ctx.attr("explicit_paddings", []))
        if len(pads) != 8:
            raise ctx.unsupported(f"explicit_paddings {pads}")
        return pads[2], pads[3], pads[4], pads[5]
    raise ctx.unsupported(f"padding {padding!r}")


def _check_nhwc(ctx: OpContext) -> None:
    fmt = ctx.attr("data_format", "NHWC")
    if fmt not in ("NHWC", 0, ""):
        raise ctx.unsupported(f"data_format {fmt!r} (only NHWC)")


def _hw_attr(ctx: OpContext, key: str) -> tuple[int, int]:
    vals = list(ctx.attr(key, [1, 1, 1, 1]) or [1, 1, 1, 1])
    if len(vals) == 4:
        return vals[1], vals[2]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise ctx.unsupported(f"{key} {vals}")


def _apply_activation(ctx: OpContext, x: Tensor, name: str, extra: list[Tensor]) -> Tensor:
    """Apply a fused activation; ``x`` is a fresh result, so it may be changed in place."""
    if name == "Relu":
        return x.relu_()
    if name == "Relu6":
        return x.clamp_(0.0, 6.0)
    if name == "Elu":
        return F.elu(x)
    if name == "LeakyRelu":
        return F.leaky_relu(x, float(ctx.attr("leakyrelu_alpha", 0.2)))
    if name == "Sigmoid":
        return torch.sigmoid(x)
    if name == "Tanh":
        return torch.tanh(x)
    if name == "Prelu":
        if not extra:
            raise ctx.unsupported("Prelu without its alpha input")
        alpha = extra[0]
        return torch.where(x >= 0, x, x * alpha)
    raise ctx.unsupported(f"fused activation {name!r}")


def _fused_bias_activation(ctx: OpContext, args: list[Tensor]) -> tuple[Tensor | None, list[str], list[Tensor]]:
    """Split a fused node's ``fused_ops`` into (bias, activations, extra args of the activation)."""
    fused = list(ctx.attr("fused_ops", []) or [])
    extra = list(args)
    bias = None
    if fused and fused[0] == "BiasAdd":
        bias = extra.pop(0) if extra else None
        fused = fused[1:]
    elif fused and fused[0] in ("FusedBatchNorm", "FusedBatchNormV3"):
        raise ctx.unsupported(f"fused op {fused[0]!r}")
    return bias, fused, extra


def _conv_nhwc(ctx: OpContext, x: Tensor, filt: Tensor, bias: Tensor | None, *, depthwise: bool) -> Tensor:
    """2D convolution (+ bias) of NHWC ``x`` with a TF filter (HWIO, or H W C M for depthwise); returns NHWC."""
    _check_nhwc(ctx)
    strides = _hw_attr(ctx, "strides")
    dilations = _hw_attr(ctx, "dilations")
    kh, kw = int(filt.shape[0]), int(filt.shape[1])
    cin = int(x.shape[3])
    weight = ctx.memo.get("weight") if ctx.const_inputs[1] else None
    if weight is None:
        if depthwise:
            # [kh, kw, C, M] -> [C * M, 1, kh, kw]: output channel c * M + m, as in TensorFlow.
            weight = filt.permute(2, 3, 0, 1).reshape(-1, 1, kh, kw).contiguous()
        else:
            weight = filt.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        weight = weight.to(torch.float32)
        if ctx.const_inputs[1]:
            ctx.memo["weight"] = weight
    groups = cin if depthwise else cin // int(filt.shape[2])
    top, bottom, left, right = _spatial_padding(ctx, (int(x.shape[1]), int(x.shape[2])), (kh, kw), strides, dilations)
    xc = x.to(torch.float32).permute(0, 3, 1, 2)  # a channels-last NCHW view of the NHWC tensor: no copy
    if top == bottom and left == right:
        pad: tuple[int, int] = (top, left)
    else:
        xc = F.pad(xc, (left, right, top, bottom))
        pad = (0, 0)
    if bias is not None:
        bias = bias.to(torch.float32).reshape(-1)
    y = F.conv2d(xc, weight, bias, stride=strides, padding=pad, dilation=dilations, groups=groups)
    return y.permute(0, 2, 3, 1)


def _conv_op(ctx: OpContext, args: list[Tensor], *, depthwise: bool, fused: bool) -> Tensor:
    x, filt = args[0], args[1]
    if not fused:
        return _conv_nhwc(ctx, x, filt, None, depthwise=depthwise)
    bias, acts, extra = _fused_bias_activation(ctx, args[2:])
    y = _conv_nhwc(ctx, x, filt, bias, depthwise=depthwise)
    for act in acts:
        y = _apply_activation(ctx, y, act, extra)
    return y


# ----------------------------------------------------------------------------------------------- the ops


@_register("Conv2D")
def _op_conv2d(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return _conv_op(ctx, args, depthwise=False, fused=False)


@_register("_FusedConv2D")
def _op_fused_conv2d(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return _conv_op(ctx, args, depthwise=False, fused=True)


@_register("DepthwiseConv2dNative")
def _op_depthwise(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return _conv_op(ctx, args, depthwise=True, fused=False)


@_register("FusedDepthwiseConv2dNative")
def _op_fused_depthwise(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return _conv_op(ctx, args, depthwise=True, fused=True)


@_register("MaxPool", "AvgPool")
def _op_pool(ctx: OpContext, args: list[Tensor]) -> Tensor:
    _check_nhwc(ctx)
    x = args[0]
    khw = _hw_attr(ctx, "ksize")
    strides = _hw_attr(ctx, "strides")
    top, bottom, left, right = _spatial_padding(ctx, (int(x.shape[1]), int(x.shape[2])), khw, strides, (1, 1))
    xc = x.permute(0, 3, 1, 2)
    if ctx.node.op == "MaxPool":
        # Padded cells never win: TensorFlow's SAME max pooling ignores them.
        xc = F.pad(xc, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(xc, khw, strides).permute(0, 2, 3, 1)
    # SAME average pooling divides by the number of real (unpadded) cells.
    total = F.avg_pool2d(F.pad(xc, (left, right, top, bottom)), khw, strides, divisor_override=1)
    ones = F.pad(torch.ones_like(xc[:1, :1]), (left, right, top, bottom))
    count = F.avg_pool2d(ones, khw, strides, divisor_override=1)
    return (total / count).permute(0, 2, 3, 1)


def _resize_axis(in_size: int, out_size: int, align_corners: bool, half_pixel: bool,
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices (lower, upper) and interpolation weights of one axis, exactly as TensorFlow computes them."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    src = (dst + 0.5) * scale - 0.5 if half_pixel else dst * scale
    lower = torch.clamp(torch.floor(src), min=0)
    upper = torch.clamp(torch.ceil(src), max=in_size - 1)
    frac = (src - lower).to(torch.float32)
    return lower.long(), upper.long(), frac


@_register("ResizeBilinear")
def _op_resize_bilinear(ctx: OpContext, args: list[Tensor]) -> Tensor:
    x = args[0].to(torch.float32)
    out_h, out_w = _ints(args[1])
    align = bool(ctx.attr("align_corners", False))
    half = bool(ctx.attr("half_pixel_centers", False))
    if align and half:
        raise ctx.unsupported("align_corners together with half_pixel_centers")
    y0, y1, fy = _resize_axis(int(x.shape[1]), out_h, align, half, x.device)
    x0, x1, fx = _resize_axis(int(x.shape[2]), out_w, align, half, x.device)
    top = x.index_select(1, y0)
    bottom = x.index_select(1, y1)
    fx = fx.view(1, 1, -1, 1)
    top = top.index_select(2, x0) + (top.index_select(2, x1) - top.index_select(2, x0)) * fx
    bottom = bottom.index_select(2, x0) + (bottom.index_select(2, x1) - bottom.index_select(2, x0)) * fx
    return top + (bottom - top) * fy.view(1, -1, 1, 1)


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda ctx, args: fn(args[0], args[1])


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda ctx, args: fn(args[0])


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _floor_div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point():
        return torch.floor(a / b)
    return torch.div(a, b, rounding_mode="floor")


for _names, _fn in [
    (("Add", "AddV2"), torch.add),
    (("Sub",), torch.sub),
    (("Mul",), torch.mul),
    (("RealDiv", "Div"), _div),
    (("FloorDiv",), _floor_div),
    (("FloorMod",), torch.remainder),
    (("Maximum",), torch.maximum),
    (("Minimum",), torch.minimum),
    (("Pow",), torch.pow),
    (("SquaredDifference",), lambda a, b: (a - b) * (a - b)),
    (("Less",), torch.lt),
    (("LessEqual",), torch.le),
    (("Greater",), torch.gt),
    (("GreaterEqual",), torch.ge),
    (("Equal",), torch.eq),
    (("NotEqual",), torch.ne),
    (("LogicalAnd",), torch.logical_and),
    (("LogicalOr",), torch.logical_or),
    (("BiasAdd",), torch.add),
]:
    _register(*_names)(_binary(_fn))

for _names, _fn1 in [
    (("Identity", "StopGradient", "Snapshot"), lambda x: x),
    (("Abs",), torch.abs),
    (("Neg",), torch.neg),
    (("Exp",), torch.exp),
    (("Log",), torch.log),
    (("Sqrt",), torch.sqrt),
    (("Rsqrt",), torch.rsqrt),
    (("Square",), torch.square),
    (("Reciprocal", "Inv"), torch.reciprocal),
    (("Sigmoid",), torch.sigmoid),
    (("Tanh",), torch.tanh),
    (("Relu",), torch.relu),
    (("Relu6",), lambda x: torch.clamp(x, 0.0, 6.0)),
    (("Elu",), F.elu),
    (("Floor",), torch.floor),
    (("Ceil",), torch.ceil),
    (("Round",), torch.round),  # half to even, as TensorFlow
    (("Sign",), torch.sign),
    (("LogicalNot",), torch.logical_not),
    (("ZerosLike",), torch.zeros_like),
    (("OnesLike",), torch.ones_like),
]:
    _register(*_names)(_unary(_fn1))


@_register("AddN")
def _op_addn(ctx: OpContext, args: list[Tensor]) -> Tensor:
    total = args[0]
    for a in args[1:]:
        total = total + a
    return total


@_register("Cast")
def _op_cast(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return args[0].to(tf_dtype(ctx.attr("DstT")))  # float -> int truncates toward zero, as TensorFlow


@_register("Shape")
def _op_shape(ctx: OpContext, args: list[Tensor]) -> Tensor:
    dtype = tf_dtype(ctx.attr("out_type", "DT_INT32"))
    return torch.tensor(list(args[0].shape), dtype=dtype, device=ctx.device)


@_register("Size")
def _op_size(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return torch.tensor(args[0].numel(), dtype=tf_dtype(ctx.attr("out_type", "DT_INT32")), device=ctx.device)


@_register("Reshape")
def _op_reshape(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return args[0].reshape(_ints(args[1]))


@_register("Squeeze")
def _op_squeeze(ctx: OpContext, args: list[Tensor]) -> Tensor:
    x = args[0]
    dims = list(ctx.attr("squeeze_dims", []) or [])
    if not dims:
        return x.squeeze()
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        if x.shape[d] != 1:
            raise TFJSGraphError(f"Squeeze node {ctx.node.name!r}: dimension {d} of {tuple(x.shape)} is not 1")
        x = x.squeeze(d)
    return x


@_register("ExpandDims")
def _op_expand_dims(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return args[0].unsqueeze(_int(args[1]))


@_register("Transpose")
def _op_transpose(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return args[0].permute(_ints(args[1]))


@_register("Pack")
def _op_pack(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return torch.stack(args, dim=int(ctx.attr("axis", 0)))


@_register("Unpack")
def _op_unpack(ctx: OpContext, args: list[Tensor]) -> list[Tensor]:
    return list(torch.unbind(args[0], dim=int(ctx.attr("axis", 0))))


@_register("Split")
def _op_split(ctx: OpContext, args: list[Tensor]) -> list[Tensor]:
    dim, x = _int(args[0]), args[1]
    num = int(ctx.attr("num_split", 1))
    if x.shape[dim] % num:
        raise TFJSGraphError(f"Split node {ctx.node.name!r}: {x.shape[dim]} is not divisible into {num} parts")
    return list(torch.split(x, x.shape[dim] // num, dim=dim))


@_register("SplitV")
def _op_split_v(ctx: OpContext, args: list[Tensor]) -> list[Tensor]:
    x, sizes, dim = args[0], _ints(args[1]), _int(args[2])
    return split_v(x, sizes, dim)


def split_v(x: Tensor, sizes: Sequence[int], axis: int) -> list[Tensor]:
    """TensorFlow ``SplitV``: split ``x`` along ``axis`` into parts of the given sizes; one size may be -1 (the
    rest). Raises ValueError when the sizes do not add up to the dimension."""
    sizes = [int(s) for s in sizes]
    total = int(x.shape[axis])
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1 or any(s < -1 for s in sizes):
        raise ValueError(f"SplitV: sizes {sizes} may hold at most one -1 and no other negative size")
    if unknown:
        sizes[unknown[0]] = total - (sum(sizes) + 1)
    if sum(sizes) != total or any(s < 0 for s in sizes):
        raise ValueError(f"SplitV: sizes {sizes} do not add up to the dimension's {total}")
    return list(torch.split(x, sizes, dim=axis))


def pad_constant(x: Tensor, paddings: Sequence[Sequence[int]], value: float = 0.0) -> Tensor:
    """TensorFlow ``Pad`` / ``PadV2``: ``paddings[i] = (before, after)`` for dimension i, filled with ``value``."""
    pads = [tuple(int(v) for v in p) for p in paddings]
    if len(pads) != x.dim() or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ValueError(f"paddings {pads} do not fit a tensor of {x.dim()} dimensions (one (before, after) "
                         "pair of non-negative sizes per dimension)")
    flat: list[int] = []
    for before, after in reversed(pads):  # F.pad lists the last dimension first
        flat += [before, after]
    if x.dtype == torch.bool:
        return F.pad(x.to(torch.uint8), flat, value=int(bool(value))).to(torch.bool)
    return F.pad(x, flat, value=value)


@_register("Pad", "PadV2")
def _op_pad(ctx: OpContext, args: list[Tensor]) -> Tensor:
    paddings = args[1].reshape(-1, 2).tolist()
    value = args[2].reshape(-1)[0].item() if ctx.node.op == "PadV2" and len(args) > 2 else 0
    return pad_constant(args[0], paddings, value)


@_register("LeakyRelu")
def _op_leaky_relu(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return F.leaky_relu(args[0], float(ctx.attr("alpha", 0.2)))


def sparse_to_dense(indices: Tensor, shape: Sequence[int], values: Tensor, default: Tensor | float) -> Tensor:
    """TensorFlow ``SparseToDense``: a tensor of ``shape`` filled with ``default``, with ``values`` at ``indices``.

    Shapes: indices () / (N,) (positions along a 1-D output) or (N, R) (R = len(shape)); values () (one value for
    every index) or (N,). Raises IndexError for an index outside ``shape``.
    """
    shape = [int(s) for s in shape]
    idx = indices.long().reshape(-1, 1) if indices.dim() < 2 else indices.long()
    if idx.shape[1] != len(shape):
        raise ValueError(f"SparseToDense: indices of rank {idx.shape[1]} for an output of shape {shape}")
    limits = torch.tensor(shape, device=idx.device)
    if idx.numel() and ((idx < 0).any() or (idx >= limits).any()):
        raise IndexError(f"SparseToDense: an index lies outside the output shape {shape}")
    default_t = torch.as_tensor(default, device=values.device).reshape(-1)[0]
    out = torch.full(shape, default_t.item(), dtype=values.dtype, device=values.device)
    vals = values.reshape(-1)
    if vals.numel() == 1:
        vals = vals.expand(idx.shape[0])
    if idx.shape[0]:
        out[tuple(idx.t())] = vals
    return out


@_register("SparseToDense")
def _op_sparse_to_dense(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return sparse_to_dense(args[0], _ints(args[1]), args[2], args[3])


@_register("ConcatV2", "Concat")
def _op_concat(ctx: OpContext, args: list[Tensor]) -> Tensor:
    if ctx.node.op == "Concat":
        axis, tensors = _int(args[0]), args[1:]
    else:
        axis, tensors = _int(args[-1]), args[:-1]
    return torch.cat(tensors, dim=axis)


@_register("Tile")
def _op_tile(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return args[0].repeat(_ints(args[1]))


@_register("Fill")
def _op_fill(ctx: OpContext, args: list[Tensor]) -> Tensor:
    value = args[1]
    return torch.full(_ints(args[0]), value.item(), dtype=value.dtype, device=ctx.device)


@_register("Range")
def _op_range(ctx: OpContext, args: list[Tensor]) -> Tensor:
    start, limit, delta = (a.item() for a in args[:3])
    return torch.arange(start, limit, delta, dtype=args[0].dtype, device=ctx.device)


@_register("Select", "SelectV2")
def _op_select(ctx: OpContext, args: list[Tensor]) -> Tensor:
    cond, a, b = args
    if ctx.node.op == "Select" and cond.dim() == 1 and a.dim() > 1:
        cond = cond.reshape(-1, *([1] * (a.dim() - 1)))  # Select (v1) with a vector picks whole rows
    return torch.where(cond, a, b)


def _reduce_dims(x: Tensor, axes: Tensor) -> list[int]:
    return sorted({d % max(x.dim(), 1) for d in _ints(axes)})


@_register("Sum", "Max", "Min", "Mean", "Prod", "All", "Any")
def _op_reduce(ctx: OpContext, args: list[Tensor]) -> Tensor:
    x = args[0]
    dims = _reduce_dims(x, args[1])
    keep = bool(ctx.attr("keep_dims", False))
    if not dims:
        return x
    op = ctx.node.op
    if op == "Sum":
        return torch.sum(x, dim=dims, keepdim=keep).to(x.dtype)
    if op == "Max":
        return torch.amax(x, dim=dims, keepdim=keep)
    if op == "Min":
        return torch.amin(x, dim=dims, keepdim=keep)
    if op == "Mean":
        if not x.is_floating_point():
            raise ctx.unsupported(f"Mean of {x.dtype}")
        return torch.mean(x, dim=dims, keepdim=keep)
    if op == "Prod":
        out = x
        for d in reversed(dims):
            out = torch.prod(out, dim=d, keepdim=keep)
        return out.to(x.dtype)
    fn = torch.all if op == "All" else torch.any
    out = x
    for d in reversed(dims):
        out = fn(out, dim=d, keepdim=keep)
    return out


@_register("ArgMax", "ArgMin")
def _op_argmax(ctx: OpContext, args: list[Tensor]) -> Tensor:
    fn = torch.argmax if ctx.node.op == "ArgMax" else torch.argmin  # both return the first extreme, as TF
    out = fn(args[0], dim=_int(args[1]))
    return out.to(tf_dtype(ctx.attr("output_type", "DT_INT64")))


@_register("TopKV2")
def _op_topk(ctx: OpContext, args: list[Tensor]) -> list[Tensor]:
    x, k = args[0], _int(args[1])
    if k > x.shape[-1]:
        raise TFJSGraphError(f"TopKV2 node {ctx.node.name!r}: k={k} but the last dimension has {x.shape[-1]}")
    # Equal values keep the lower index first (TensorFlow's rule), hence a stable sort.
    values, indices = torch.sort(x, dim=-1, descending=True, stable=True)
    return [values[..., :k], indices[..., :k].to(torch.int32)]


def gather_nd(params: Tensor, indices: Tensor) -> Tensor:
    """TensorFlow ``gather_nd``: output[i...] = params[indices[i..., 0], ..., indices[i..., M-1], ...].

    Shapes: params (D0, ..., Dn), indices (..., M) with M <= n + 1 -> (..., D_M, ..., Dn).
    """
    idx = indices.long()
    m = int(idx.shape[-1])
    lead = list(params.shape[:m])
    rest = list(params.shape[m:])
    linear = torch.zeros(idx.shape[:-1], dtype=torch.long, device=params.device)
    for axis in range(m):
        linear = linear * lead[axis] + idx[..., axis]
    return params.reshape(-1, *rest)[linear]


@_register("GatherNd")
def _op_gather_nd(ctx: OpContext, args: list[Tensor]) -> Tensor:
    return gather_nd(args[0], args[1])


def gather(params: Tensor, indices: Tensor, axis: int = 0) -> Tensor:
    """TensorFlow ``gather`` (``GatherV2`` with ``batch_dims`` 0): pick entries of ``params`` along ``axis``.

    Shapes: params (D0, ..., Dn), indices (I...) -> (D0, ..., D_{axis-1}, I..., D_{axis+1}, ..., Dn).

    Raises:
        IndexError: an index outside [0, D_axis) (TensorFlow on CPU refuses those too).
    """
    axis = axis % params.dim()
    idx = indices.long()
    size = int(params.shape[axis])
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise IndexError(f"gather: indices must lie in [0, {size}), got {int(idx.min())}..{int(idx.max())}")
    picked = params.index_select(axis, idx.reshape(-1))
    return picked.reshape(*params.shape[:axis], *idx.shape, *params.shape[axis + 1:])


@_register("GatherV2", "Gather")
def _op_gather(ctx: OpContext, args: list[Tensor]) -> Tensor:
    if int(ctx.attr("batch_dims", 0) or 0) != 0:
        raise ctx.unsupported(f"batch_dims {ctx.attr('batch_dims')}")
    axis = _int(args[2]) if ctx.node.op == "GatherV2" else 0
    return gather(args[0], args[1], axis)


def strided_slice(x: Tensor, begin: Sequence[int], end: Sequence[int], strides: Sequence[int], *,
                  begin_mask: int = 0, end_mask: int = 0, ellipsis_mask: int = 0, new_axis_mask: int = 0,
                  shrink_axis_mask: int = 0) -> Tensor:
    """TensorFlow ``strided_slice`` (all masks; negative strides included).

    Bit i of a mask refers to entry i of ``begin``/``end``/``strides``: ``begin_mask``/``end_mask`` use the full
    range instead of the value, ``ellipsis_mask`` stands for as many full dimensions as needed,
    ``new_axis_mask`` inserts a dimension of size 1, ``shrink_axis_mask`` takes the single index ``begin[i]`` and
    drops the dimension.
    """
    n = len(begin)
    if not (len(end) == len(strides) == n):
        raise ValueError(f"begin, end and strides differ in length: {len(begin)}, {len(end)}, {len(strides)}")
    # Expand the sparse spec into one entry per output-affecting item (ellipsis -> full slices).
    real = sum(1 for i in range(n) if not (ellipsis_mask >> i) & 1 and not (new_axis_mask >> i) & 1)
    spec: list[tuple[str, int]] = []
    seen_ellipsis = False
    for i in range(n):
        if (ellipsis_mask >> i) & 1:
            if seen_ellipsis:
                raise ValueError("strided_slice: more than one ellipsis")
            seen_ellipsis = True
            spec += [("full", -1)] * max(x.dim() - real, 0)
        elif (new_axis_mask >> i) & 1:
            spec.append(("new", i))
        elif (shrink_axis_mask >> i) & 1:
            spec.append(("index", i))
        else:
            spec.append(("slice", i))
    covered = sum(1 for kind, _ in spec if kind != "new")
    spec += [("full", -1)] * max(x.dim() - covered, 0)
    out = x
    dim = 0
    for kind, i in spec:
        if kind == "new":
            out = out.unsqueeze(dim)
            dim += 1
        elif kind == "full":
            dim += 1
        elif kind == "index":
            size = out.shape[dim]
            pos = 0 if (begin_mask >> i) & 1 else int(begin[i])
            pos = pos + size if pos < 0 else pos
            if not 0 <= pos < size:
                raise IndexError(f"strided_slice: index {begin[i]} out of range for a dimension of size {size}")
            out = out.select(dim, pos)
        else:
            step = int(strides[i])
            if step == 0:
                raise ValueError("strided_slice: stride 0")
            b = None if (begin_mask >> i) & 1 else int(begin[i])
            e = None if (end_mask >> i) & 1 else int(end[i])
            start, stop, step = slice(b, e, step).indices(out.shape[dim])
            if step > 0:
                out = out[(slice(None),) * dim + (slice(start, stop, step),)]
            else:
                idx = torch.arange(start, stop, step, device=out.device)
                out = out.index_select(dim, idx)
            dim += 1
    return out


@_register("StridedSlice")
def _op_strided_slice(ctx: OpContext, args: list[Tensor]) -> Tensor:
    masks = {k: int(ctx.attr(k, 0)) for k in
             ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    return strided_slice(args[0], _ints(args[1]), _ints(args[2]), _ints(args[3]), **masks)

