"""The TF.js graph-model file format: a ``model.json`` topology and its ``*.bin`` weight shards, read with numpy.

This module owns what is read from disk before anything runs: the error types of the TF.js loader, the mapping of
TensorFlow dtypes to torch/numpy, the parsing of ``modelTopology.node`` into :class:`GraphNode` records (with their
``attr`` values decoded) and the decoding of the weight shards described by ``weightsManifest`` (including the
``float16``/``uint8``/``uint16`` quantisations). The op implementations are in :mod:`.tfjs_ops`, the graph
executor in :mod:`.tfjs_graph`.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metahmr_cli.errors import MetaHMRError

Tensor = torch.Tensor


class TFJSGraphError(MetaHMRError):
    """A TF.js model file is damaged, incomplete or of a form this loader does not read."""


class UnsupportedOpError(TFJSGraphError, NotImplementedError):
    """The graph uses an op (or an op setting) that :class:`TFJSGraph` does not implement."""


# ------------------------------------------------------------------------------------------------- dtypes

_TF_DTYPES: dict[str, torch.dtype] = {
    "DT_FLOAT": torch.float32,
    "DT_DOUBLE": torch.float64,
    "DT_HALF": torch.float16,
    "DT_INT32": torch.int32,
    "DT_INT64": torch.int64,
    "DT_INT16": torch.int16,
    "DT_INT8": torch.int8,
    "DT_UINT8": torch.uint8,
    "DT_BOOL": torch.bool,
}
"""TensorFlow dtype names (as in ``attr`` ``type`` values) -> torch dtypes."""

_MANIFEST_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("bool"),
}
"""``weightsManifest`` dtypes -> little-endian numpy dtypes of the stored bytes."""

_QUANT_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
}
"""Quantisation dtypes of TF.js weights -> numpy dtypes of the stored bytes."""


def tf_dtype(name: str) -> torch.dtype:
    """The torch dtype of a TensorFlow dtype name (``"DT_FLOAT"`` -> ``torch.float32``)."""
    try:
        return _TF_DTYPES[name]
    except KeyError:
        raise UnsupportedOpError(f"TensorFlow dtype {name} is not supported") from None


# -------------------------------------------------------------------------------------------- graph parsing


@dataclass(frozen=True)
class GraphNode:
    """One node of the graph.

    Attributes:
        name: unique node name.
        op: TensorFlow op type (``"_FusedConv2D"``, ``"StridedSlice"`` ...).
        inputs: data inputs as (node name, output index); control inputs (``^name``) are dropped.
        attr: decoded attributes (ints, floats, bools, strings, dtype names, lists of those, shapes).
    """

    name: str
    op: str
    inputs: tuple[tuple[str, int], ...] = ()
    attr: Mapping[str, Any] = field(default_factory=dict)


def parse_tensor_ref(ref: str) -> tuple[str, int]:
    """Split ``"name:1"`` into ``("name", 1)``; ``"name"`` is output 0."""
    name, sep, index = ref.rpartition(":")
    if sep and index.isdigit():
        return name, int(index)
    return ref, 0


def _decode_scalar_list(kind: str, values: list) -> list:
    if kind == "s":
        return [_decode_string(v) for v in values]
    if kind == "i":
        return [int(v) for v in values]
    if kind == "f":
        return [float(v) for v in values]
    if kind == "b":
        return [bool(v) for v in values]
    if kind == "shape":
        return [_decode_shape(v) for v in values]
    return list(values)


def _decode_string(value: str) -> str:
    raw = base64.b64decode(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_shape(value: Mapping[str, Any]) -> list[int] | None:
    if value.get("unknownRank"):
        return None
    return [int(d.get("size", -1)) for d in value.get("dim", [])]


def decode_attr(value: Mapping[str, Any]) -> Any:
    """Decode one ``attr`` value of a ``NodeDef`` in proto JSON form (``{"i": "2"}``, ``{"s": base64}`` ...)."""
    if "list" in value:
        lst = value["list"] or {}
        for kind, items in lst.items():
            return _decode_scalar_list(kind, items)
        return []
    if "s" in value:
        return _decode_string(value["s"])
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return _decode_shape(value["shape"])
    if not value:  # proto JSON omits default values: an empty attr is 0 / false / ""
        return 0
    return dict(value)  # tensor / func: kept as is


def parse_nodes(topology_nodes: Sequence[Mapping[str, Any]]) -> list[GraphNode]:
    """Turn the ``modelTopology.node`` list of a model.json into :class:`GraphNode` objects."""
    nodes = []
    for raw in topology_nodes:
        inputs = tuple(parse_tensor_ref(ref) for ref in raw.get("input", []) if not ref.startswith("^"))
        attr = {key: decode_attr(val) for key, val in (raw.get("attr") or {}).items()}
        nodes.append(GraphNode(name=raw["name"], op=raw["op"], inputs=inputs, attr=attr))
    return nodes


# ------------------------------------------------------------------------------------------------- weights


def _decode_weight(spec: Mapping[str, Any], data: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """Decode one manifest entry starting at ``offset``; returns (array, bytes used)."""
    name = spec["name"]
    shape = [int(s) for s in spec.get("shape", [])]
    count = math.prod(shape)
    dtype = spec.get("dtype", "float32")
    if dtype not in _MANIFEST_DTYPES:
        raise TFJSGraphError(f"weight {name!r}: dtype {dtype!r} is not supported (float32, int32, bool)")
    quant = spec.get("quantization")
    stored = _MANIFEST_DTYPES[dtype]
    if quant:
        qtype = quant.get("dtype")
        if qtype not in _QUANT_DTYPES:
            raise TFJSGraphError(f"weight {name!r}: quantisation dtype {qtype!r} is not supported")
        stored = _QUANT_DTYPES[qtype]
    nbytes = count * stored.itemsize
    if offset + nbytes > len(data):
        raise TFJSGraphError(f"weight {name!r} lies past the end of the weight files ({len(data)} bytes)")
    raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
    if quant and quant["dtype"] == "float16":
        if dtype != "float32":
            raise TFJSGraphError(f"weight {name!r}: float16 quantisation of a {dtype} tensor")
        values = raw.astype(np.float32)
    elif quant:
        if "scale" not in quant or "min" not in quant:
            raise TFJSGraphError(f"weight {name!r}: {quant['dtype']} quantisation without 'scale' and 'min'")
        # TF.js dequantises in double precision and stores the result as float32 (or rounds to int32).
        real = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
        values = np.round(real).astype(np.int32) if dtype == "int32" else real.astype(np.float32)
    else:
        values = raw.astype(stored.newbyteorder("="))
    return values.reshape(shape), nbytes


def load_weights(manifest: Sequence[Mapping[str, Any]], folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every weight of a ``weightsManifest`` from its binary shards (in ``folder``) with numpy.

    Returns:
        weight name -> array (float32 / int32 / bool, dequantised), shaped as the manifest says.

    Raises:
        TFJSGraphError: a shard is missing or has another size than the manifest implies.
    """
    folder = Path(folder)
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        chunks = []
        for rel in group.get("paths", []):
            path = folder / rel
            if not path.is_file():
                raise TFJSGraphError(f"weight file {path} (listed in the model's weightsManifest) does not exist")
            chunks.append(path.read_bytes())
        data = memoryview(b"".join(chunks))
        offset = 0
        for spec in group.get("weights", []):
            values, used = _decode_weight(spec, data, offset)
            out[spec["name"]] = values
            offset += used
        if offset != len(data):
            raise TFJSGraphError(
                f"weight files {', '.join(group.get('paths', []))} hold {len(data)} bytes but the manifest "
                f"describes {offset}: the files do not belong to this model.json or are damaged"
            )
    return out

