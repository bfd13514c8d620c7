"""Load TensorFlow.js graph models (``model.json`` + ``*.bin`` weight shards) and run them with PyTorch ops.

A TF.js graph model is a frozen TensorFlow graph: ``modelTopology.node`` lists nodes (``name``, ``op``,
``input`` and ``attr``, the JSON form of TensorFlow's ``NodeDef``) and ``weightsManifest`` lists the constant
tensors stored, in order, in the binary shards (optionally quantised to ``float16``, ``uint8`` or ``uint16``).
:class:`TFJSGraph` reads both with numpy (no pickle, no TensorFlow) and evaluates the graph node by node with
torch operations that follow TensorFlow's semantics: NHWC layout, ``SAME`` padding that puts the odd pixel at
the end, ``ResizeBilinear`` with TensorFlow's ``align_corners`` / ``half_pixel_centers`` rules, stable ``TopKV2``,
``StridedSlice`` with all five masks, and so on. Shapes are not fixed at load time: every shape computation in
the graph (``Shape``, ``StridedSlice``, ``Pack`` ...) runs on the actual inputs, so a fully convolutional model
accepts other input sizes than the one it was exported with.

Example::

    graph = TFJSGraph.load("weights/keypoints/movenet-multipose/movenet-multipose.json", device="cpu")
    (out,) = graph.run({"input": torch.zeros(1, 256, 256, 3, dtype=torch.int32)}).values()

An op that is not implemented raises :class:`UnsupportedOpError` naming the op and the node, before any work.

This module owns the executor (:class:`TFJSGraph`: planning, constants on the device, node-by-node evaluation);
reading ``model.json`` and the weight shards is :mod:`.tfjs_format`, the op implementations are :mod:`.tfjs_ops`.
Every public name of the three is importable from here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metahmr_cli.keypoints.tfjs_format import (
    _TF_DTYPES,
    GraphNode,
    TFJSGraphError,
    UnsupportedOpError,
    decode_attr,
    load_weights,
    parse_nodes,
    parse_tensor_ref,
    tf_dtype,
)
from metahmr_cli.keypoints.tfjs_ops import (
    _OPS,
    OpContext,
    gather,
    gather_nd,
    pad_constant,
    same_padding,
    sparse_to_dense,
    split_v,
    strided_slice,
    supported_ops,
)

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------- the graph


@contextlib.contextmanager
def _full_fp32_convolutions(device: torch.device) -> Iterator[None]:
    """Run cuDNN convolutions in full float32 (not TF32) inside the block, as TensorFlow(.js) computes them."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:  # older torch
        old_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old_flag


class TFJSGraph:
    """A TF.js graph model evaluated with torch ops.

    Args:
        nodes: the graph (see :func:`parse_nodes`).
        consts: values of the ``Const`` nodes by node name (from :func:`load_weights`).
        inputs: names of the input tensors (``Placeholder`` nodes; ``"name"`` or ``"name:0"``). Default: every
            ``Placeholder`` in node order.
        outputs: names of the output tensors. Default: every node output no other node consumes.
        device: where the weights live and the graph runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        allow_tf32: let CUDA convolutions use TF32 (faster on recent GPUs, about 1e-3 relative error); by default
            they run in full float32 like TensorFlow.

    Raises:
        UnsupportedOpError: the graph (the part needed for ``outputs``) uses an op that is not implemented.
    """

    def __init__(self, nodes: Sequence[GraphNode], consts: Mapping[str, np.ndarray], *,
                 inputs: Sequence[str] | None = None, outputs: Sequence[str] | None = None,
                 device: str | torch.device = "cpu", allow_tf32: bool = False) -> None:
        self.nodes: dict[str, GraphNode] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise TFJSGraphError(f"two nodes are named {node.name!r}")
            self.nodes[node.name] = node
        for node in self.nodes.values():
            for src, _ in node.inputs:
                if src not in self.nodes:
                    raise TFJSGraphError(f"node {node.name!r} reads {src!r}, which is not in the graph")
        self._np_consts = dict(consts)
        for node in self.nodes.values():
            if node.op == "Const" and node.name not in self._np_consts:
                raise TFJSGraphError(f"constant {node.name!r} has no value in the weights")
        if inputs is None:
            inputs = [n.name for n in self.nodes.values() if n.op == "Placeholder"]
        self.input_names: list[str] = [parse_tensor_ref(r)[0] for r in inputs]
        if outputs is None:
            used = {ref for n in self.nodes.values() for ref in n.inputs}
            outputs = [n.name for n in self.nodes.values() if (n.name, 0) not in used and n.op != "Const"]
        self.output_names: list[str] = [self._ref_name(parse_tensor_ref(r)) for r in outputs]
        self.device = torch.device(device)
        self.allow_tf32 = bool(allow_tf32)
        self._consts: dict[str, Tensor] = {}
        self._memo: dict[str, dict[str, Any]] = {}
        self._plans: dict[tuple[str, ...], tuple[list[GraphNode], dict[str, int]]] = {}
        self.to(self.device)
        self._plan(tuple(self.output_names))  # fails early on unsupported ops

    @staticmethod
    def _ref_name(ref: tuple[str, int]) -> str:
        return ref[0] if ref[1] == 0 else f"{ref[0]}:{ref[1]}"

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def from_model_json(cls, model: Mapping[str, Any], consts: Mapping[str, np.ndarray], *,
                        device: str | torch.device = "cpu") -> TFJSGraph:
        """Build from a parsed model.json and already decoded weights (inputs/outputs from its ``signature``)."""
        if model.get("format", "graph-model") != "graph-model" or "modelTopology" not in model:
            raise TFJSGraphError(f"not a TF.js graph model (format {model.get('format')!r}); layers models "
                                 "are not supported")
        topology = model["modelTopology"]
        if topology.get("library", {}).get("function"):
            raise UnsupportedOpError("TF.js graphs with functions (control flow) are not supported")
        nodes = parse_nodes(topology.get("node", []))
        signature = model.get("signature") or {}
        inputs = [v["name"] for v in (signature.get("inputs") or {}).values()] or None
        outputs = [v["name"] for v in (signature.get("outputs") or {}).values()] or None
        return cls(nodes, consts, inputs=inputs, outputs=outputs, device=device)

    @classmethod
    def load(cls, model_json: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> TFJSGraph:
        """Read ``model.json`` and its weight shards (same folder) and build the graph on ``device``.

        Raises:
            TFJSGraphError: the files are missing, damaged or not a TF.js graph model.
            UnsupportedOpError: the graph uses an op this executor does not implement.
        """
        path = Path(model_json)
        try:
            model = json.loads(path.read_text())
        except FileNotFoundError:
            raise TFJSGraphError(f"TF.js model file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TFJSGraphError(f"{path} is not a TF.js model.json: {exc}") from None
        consts = load_weights(model.get("weightsManifest", []), path.parent)
        return cls.from_model_json(model, consts, device=device)

    def to(self, device: str | torch.device) -> TFJSGraph:
        """Move the weights to ``device`` (returns self)."""
        self.device = torch.device(device)
        self._consts = {name: torch.from_numpy(np.array(arr, copy=True)).to(self.device)
                        for name, arr in self._np_consts.items()}
        self._memo = {}
        return self

    @property
    def ops(self) -> dict[str, int]:
        """How often each op occurs in the graph."""
        counts: dict[str, int] = {}
        for node in self.nodes.values():
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def _plan(self, outputs: tuple[str, ...]) -> tuple[list[GraphNode], dict[str, int]]:
        """Nodes needed for ``outputs`` in execution order, and for each node the step of its last use."""
        if outputs in self._plans:
            return self._plans[outputs]
        order: list[GraphNode] = []
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        for out in outputs:
            root = parse_tensor_ref(out)[0]
            if root not in self.nodes:
                raise TFJSGraphError(f"output {out!r} is not a node of the graph")
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    state[name] = 2
                    order.append(self.nodes[name])
                    continue
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    raise TFJSGraphError(f"the graph has a cycle through {name!r}")
                state[name] = 1
                stack.append((name, True))
                for src, _ in reversed(self.nodes[name].inputs):
                    if state.get(src) != 2:
                        if state.get(src) == 1:
                            raise TFJSGraphError(f"the graph has a cycle through {src!r}")
                        stack.append((src, False))
        known = supported_ops()
        missing = sorted({(n.op, n.name) for n in order if n.op not in known})
        if missing:
            ops = sorted({op for op, _ in missing})
            examples = "; ".join(f"{op} (node {name!r})" for op, name in missing[:5])
            raise UnsupportedOpError(
                f"the TF.js graph uses op(s) not implemented here: {', '.join(ops)} — e.g. {examples}")
        last_use: dict[str, int] = {}
        for step, node in enumerate(order):
            for src, _ in node.inputs:
                last_use[src] = step
        keep = {parse_tensor_ref(o)[0] for o in outputs}
        for name in keep:
            last_use[name] = len(order)
        self._plans[outputs] = (order, last_use)
        return order, last_use

    # ------------------------------------------------------------------------------------------- running
    def run(self, feeds: Mapping[str, Tensor | np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Evaluate the graph.

        Args:
            feeds: input name (``"input"`` or ``"input:0"``) -> tensor or array, in the dtype of its
                ``Placeholder`` (e.g. int32 NHWC images). Moved to the graph's device.
            outputs: names of the wanted tensors (default: :attr:`output_names`).

        Returns:
            output name -> tensor, in the order asked.
        """
        wanted = tuple(self._ref_name(parse_tensor_ref(o)) for o in (outputs or self.output_names))
        order, last_use = self._plan(wanted)
        values: dict[str, list[Tensor]] = {}
        for key, val in feeds.items():
            name = parse_tensor_ref(key)[0]
            if name not in self.nodes or self.nodes[name].op != "Placeholder":
                raise TFJSGraphError(f"{key!r} is not an input of the graph (inputs: {', '.join(self.input_names)})")
            t = torch.as_tensor(val)
            want = self.nodes[name].attr.get("dtype")
            if isinstance(want, str) and want in _TF_DTYPES and t.dtype != _TF_DTYPES[want]:
                raise TFJSGraphError(f"input {name!r} must be {_TF_DTYPES[want]}, got {t.dtype}")
            values[name] = [t.to(self.device)]
        precision = contextlib.nullcontext() if self.allow_tf32 else _full_fp32_convolutions(self.device)
        with torch.inference_mode(), precision:
            for step, node in enumerate(order):
                if node.op == "Placeholder":
                    if node.name not in values:
                        raise TFJSGraphError(f"input {node.name!r} was not given")
                elif node.op == "Const":
                    values[node.name] = [self._consts[node.name]]
                else:
                    args = [values[src][idx] for src, idx in node.inputs]
                    ctx = OpContext(node, tuple(self.nodes[src].op == "Const" for src, _ in node.inputs),
                                    self._memo.setdefault(node.name, {}), self.device)
                    result = _OPS[node.op](ctx, args)
                    values[node.name] = result if isinstance(result, list) else [result]
                for src, _ in node.inputs:
                    if last_use.get(src, -1) == step:
                        values.pop(src, None)
        out: dict[str, Tensor] = {}
        for ref in wanted:
            name, idx = parse_tensor_ref(ref)
            out[ref] = values[name][idx]
        return out

    def __call__(self, *inputs: Tensor | np.ndarray) -> Tensor | tuple[Tensor, ...]:
        """Run with positional inputs (in :attr:`input_names` order); one output is returned bare."""
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the graph takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        result = tuple(self.run(dict(zip(self.input_names, inputs, strict=True))).values())
        return result[0] if len(result) == 1 else result


__all__ = [
    "GraphNode",
    "OpContext",
    "TFJSGraph",
    "TFJSGraphError",
    "UnsupportedOpError",
    "decode_attr",
    "gather",
    "gather_nd",
    "load_weights",
    "parse_nodes",
    "pad_constant",
    "parse_tensor_ref",
    "same_padding",
    "sparse_to_dense",
    "split_v",
    "strided_slice",
    "supported_ops",
    "tf_dtype",
]

