"""The body model: SMPL (or the open stand-in body) driven by rotation matrices, giving vertices and joints.

``BodyModel`` wraps ``smplx.SMPL`` and adds the 9 joints of ``J_regressor_extra`` so that it returns the 49-joint
set of :mod:`metahmr_cli.body.joints`. ``load_body_model`` finds and checks the files of a body folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from torch import Tensor, nn

from metahmr_cli.assets import SMPL_MODEL_NAMES
from metahmr_cli.body.joints import (
    JOINT_SELECTION,
    NUM_EXTRA_JOINTS,
    NUM_SMPL_JOINTS,
    SMPL_VERTEX_IDS,
    VERTEX_ID_NAMES,
)
from metahmr_cli.body.layout import (
    BODY_INFO_FILE,
    EXTRA_REGRESSOR_FILE,
    H36M_REGRESSOR_FILE,
    MEAN_PARAMS_FILE,
    MODEL_KEYS,
    NUM_H36M_JOINTS,
    OPEN_BODY_NAME,
    SMPL_NUM_VERTICES,
    check_model_arrays,
)
from metahmr_cli.body.smpl_pkl import V110_NEUTRAL_WARNING, load_smpl_pkl, smpl_release
from metahmr_cli.constants import GENDERS, NUM_BETAS
from metahmr_cli.errors import AssetNotFoundError, BodyModelError, ConfigError

logger = logging.getLogger(__name__)

_HOWTO = (
    "Get SMPL from https://smpl.is.tue.mpg.de (registration, non-commercial licence) and run "
    "`metahmr weights import-smpl FILES...`; without SMPL, use the open body shipped with metahmr (`--body open`) "
    "or generate the stand-in body with `metahmr weights make-standin`."
)
_REGRESSOR_HOWTO = (
    "J_regressor_extra.npy, J_regressor_h36m.npy and smpl_mean_params.npz come with SPIN's data "
    "(github.com/nkolot/SPIN, fetch_data.sh); copy them next to the SMPL files. The open body folder "
    "(`metahmr weights make-open-body`) and the stand-in's (`metahmr weights make-standin`) contain their own."
)


def model_file_candidates(gender: str) -> list[str]:
    """File names tried, in order, for the model file of ``gender`` in a body folder."""
    g = _check_gender(gender)
    return [*SMPL_MODEL_NAMES[g], f"OPEN_{g.upper()}.npz", f"STANDIN_{g.upper()}.npz"]


@dataclass
class BodyOutput:
    """Output of :class:`BodyModel` (all in the model frame plus ``transl``)."""

    vertices: Tensor  # (B, V, 3)
    joints: Tensor  # (B, 49, 3) the 49-joint set
    smpl_joints: Tensor  # (B, 24, 3) kinematic joints


class BodyModel(nn.Module):
    """SMPL-compatible body driven by per-joint rotation matrices.

    Build it with :func:`load_body_model`; the constructor takes arrays already in memory.

    Args:
        model_data: SMPL arrays ``v_template`` (V, 3), ``shapedirs`` (V, 3, >=10), ``posedirs`` (V, 3, 207),
            ``J_regressor`` (24, V), ``weights`` (V, 24), ``kintree_table`` (2, 24), ``f`` (F, 3).
        J_regressor_extra: (9, V) regressor of the joints 45..53.
        J_regressor_h36m: (17, V) or None; needed by :meth:`regress_h36m`.
        vertex_ids: vertices used as face/foot/fingertip joints; SMPL's own when None (6890-vertex bodies only).
        name: ``"smpl"``, ``"standin"`` or the open body's name (``"open-anny-v1"``).
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        dtype: float32 or float64.
        source: where the arrays came from (for messages).
    """

    def __init__(
        self,
        model_data: Mapping[str, np.ndarray],
        *,
        J_regressor_extra: np.ndarray,
        J_regressor_h36m: np.ndarray | None = None,
        vertex_ids: Mapping[str, int] | None = None,
        name: str = "smpl",
        gender: str = "neutral",
        dtype: torch.dtype = torch.float32,
        source: str = "<memory>",
    ) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"body model dtype must be torch.float32 or torch.float64, got {dtype}")
        num_vertices = check_model_arrays(model_data, source)
        if vertex_ids is None:
            if num_vertices != SMPL_NUM_VERTICES:
                raise BodyModelError(
                    f"{source}: a body with {num_vertices} vertices needs its own vertex ids "
                    f"({', '.join(VERTEX_ID_NAMES)}); SMPL's only fit 6890-vertex bodies."
                )
            vertex_ids = SMPL_VERTEX_IDS
        vertex_ids = {k: int(v) for k, v in vertex_ids.items()}
        missing = [k for k in VERTEX_ID_NAMES if k not in vertex_ids]
        bad = [k for k, v in vertex_ids.items() if not 0 <= v < num_vertices]
        if missing or bad:
            raise BodyModelError(
                f"{source}: vertex ids incomplete or out of range (missing: {missing or 'none'}, "
                f"out of range: {bad or 'none'})."
            )
        extra = np.asarray(J_regressor_extra)
        if extra.shape != (NUM_EXTRA_JOINTS, num_vertices):
            raise BodyModelError(
                f"{EXTRA_REGRESSOR_FILE} has shape {extra.shape}, expected ({NUM_EXTRA_JOINTS}, {num_vertices}) "
                f"to match {source}. Use the regressor that belongs to this body."
            )
        if J_regressor_h36m is not None:
            h36m = np.asarray(J_regressor_h36m)
            if h36m.shape != (NUM_H36M_JOINTS, num_vertices):
                raise BodyModelError(
                    f"{H36M_REGRESSOR_FILE} has shape {h36m.shape}, expected ({NUM_H36M_JOINTS}, {num_vertices}) "
                    f"to match {source}. Use the regressor that belongs to this body."
                )
        arrays = {k: np.asarray(model_data[k]) for k in MODEL_KEYS}
        arrays["f"] = arrays["f"].astype(np.int64)
        # smplx prints a warning for models with only 10 shape components; keep the console quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                model_path=source,
                data_struct=Struct(**arrays),
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                num_betas=NUM_BETAS,
                gender=gender,
                vertex_ids=vertex_ids,
                dtype=dtype,
            )
        self.name = name
        self.gender = gender
        self.num_vertices = num_vertices
        self.faces: np.ndarray = arrays["f"].copy()
        self.vertex_ids: dict[str, int] = dict(vertex_ids)
        self.source = source
        self.register_buffer("J_regressor_extra", torch.as_tensor(extra, dtype=dtype))
        self.register_buffer("joint_selection", torch.as_tensor(JOINT_SELECTION, dtype=torch.long), persistent=False)
        if J_regressor_h36m is not None:
            self.register_buffer("J_regressor_h36m", torch.as_tensor(np.asarray(J_regressor_h36m), dtype=dtype))
        else:
            self.J_regressor_h36m = None

    @property
    def dtype(self) -> torch.dtype:
        return self.J_regressor_extra.dtype

    @property
    def device(self) -> torch.device:
        return self.J_regressor_extra.device

    @property
    def faces_tensor(self) -> Tensor:
        """(F, 3) int64 on the model's device."""
        return self.smpl.faces_tensor

    @property
    def parents(self) -> Tensor:
        """(24,) parent index of each joint (-1 for the root)."""
        return self.smpl.parents

    def forward(self, rotmat: Tensor, betas: Tensor, transl: Tensor | None = None) -> BodyOutput:
        """Pose and shape the body.

        Args:
            rotmat: (B, 24, 3, 3) joint rotations, global orientation at index 0.
            betas: (B, 10) shape coefficients.
            transl: (B, 3) translation added to vertices and joints, or None.

        Returns:
            BodyOutput with vertices (B, V, 3), joints (B, 49, 3) and smpl_joints (B, 24, 3).
        """
        if rotmat.dim() != 4 or rotmat.shape[1:] != (NUM_SMPL_JOINTS, 3, 3):
            raise ValueError(f"rotmat must have shape (B, 24, 3, 3), got {tuple(rotmat.shape)}")
        batch = rotmat.shape[0]
        if betas.shape != (batch, NUM_BETAS):
            raise ValueError(f"betas must have shape ({batch}, {NUM_BETAS}), got {tuple(betas.shape)}")
        rotmat = rotmat.to(self.dtype)
        betas = betas.to(self.dtype)
        out = self.smpl(
            betas=betas,
            body_pose=rotmat[:, 1:],
            global_orient=rotmat[:, :1],
            pose2rot=False,
        )
        vertices = out.vertices
        extra = torch.einsum("jv,bvc->bjc", self.J_regressor_extra, vertices)
        all_joints = torch.cat([out.joints, extra], dim=1)
        joints = all_joints[:, self.joint_selection]
        smpl_joints = out.joints[:, :NUM_SMPL_JOINTS]
        if transl is not None:
            if transl.shape != (batch, 3):
                raise ValueError(f"transl must have shape ({batch}, 3), got {tuple(transl.shape)}")
            offset = transl.to(self.dtype)[:, None, :]
            vertices = vertices + offset
            joints = joints + offset
            smpl_joints = smpl_joints + offset
        return BodyOutput(vertices=vertices, joints=joints, smpl_joints=smpl_joints)

    def regress_h36m(self, vertices: Tensor) -> Tensor:
        """(B, V, 3) vertices -> (B, 17, 3) Human3.6M joints (needs ``J_regressor_h36m``)."""
        if self.J_regressor_h36m is None:
            raise BodyModelError(
                f"{H36M_REGRESSOR_FILE} was not loaded for this body; load it with "
                "load_body_model(..., with_h36m=True) from a folder that contains it."
            )
        return torch.einsum("jv,bvc->bjc", self.J_regressor_h36m, vertices.to(self.dtype))

    def rest_pose(self, batch: int = 1) -> tuple[Tensor, Tensor]:
        """Identity rotations (B, 24, 3, 3) and zero betas (B, 10) on the model's device and dtype."""
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        rot = eye.expand(batch, NUM_SMPL_JOINTS, 3, 3).clone()
        return rot, torch.zeros(batch, NUM_BETAS, dtype=self.dtype, device=self.device)

    def extra_repr(self) -> str:
        return f"name={self.name}, gender={self.gender}, vertices={self.num_vertices}"


def _check_gender(gender: str) -> str:
    g = str(gender).lower()
    if g not in GENDERS:
        raise ConfigError(f"gender must be one of {', '.join(GENDERS)}, got {gender!r}")
    return g


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise BodyModelError(f"Cannot read body model file {path}: {exc}. Re-create or re-import it.") from exc


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BodyModelError(f"Cannot read {path}: {exc}. Replace the file.") from exc


def load_model_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a body model file (``.npz`` in SMPL's layout or an official SMPL ``.pkl``) into numpy arrays."""
    p = Path(path)
    if p.suffix == ".pkl":
        return load_smpl_pkl(p)
    return _load_npz(p)


def _vertex_ids_for(data: Mapping[str, np.ndarray], body_dir: Path, num_vertices: int, source: str) -> dict | None:
    if "vertex_id_names" in data and "vertex_id_values" in data:
        names = [str(n) for n in np.asarray(data["vertex_id_names"]).tolist()]
        values = [int(v) for v in np.asarray(data["vertex_id_values"]).tolist()]
        if len(names) != len(values):
            raise BodyModelError(f"{source}: vertex_id_names and vertex_id_values differ in length.")
        return dict(zip(names, values, strict=True))
    info_path = body_dir / BODY_INFO_FILE
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise BodyModelError(f"Cannot read {info_path}: {exc}") from exc
        if int(info.get("num_vertices", -1)) == num_vertices and isinstance(info.get("vertex_ids"), dict):
            return {str(k): int(v) for k, v in info["vertex_ids"].items()}
    if num_vertices == SMPL_NUM_VERTICES:
        return dict(SMPL_VERTEX_IDS)
    raise BodyModelError(
        f"{source} has {num_vertices} vertices but no vertex ids (npz keys vertex_id_names/vertex_id_values or "
        f"{BODY_INFO_FILE}); cannot place the face, foot and fingertip joints."
    )


def find_model_file(body_dir: str | os.PathLike[str], gender: str = "neutral") -> Path:
    """Return the model file of ``gender`` in ``body_dir`` (lookup order of :func:`model_file_candidates`).

    SMPL v1.1.0 files (300 shape components), told apart by name or by content (a renamed ``SMPL_NEUTRAL.pkl`` or
    a converted ``.npz``), come after every v1.0.0 file: SPIN, CLIFF and Meta-HMR used SMPLify's neutral v1.0.0,
    and the released evaluation the gendered models of SMPL v1.0.0.
    """
    d = Path(body_dir).expanduser()
    names = model_file_candidates(gender)
    if not d.is_dir():
        raise AssetNotFoundError(f"Body model folder {d} does not exist. {_HOWTO}")
    found = [d / name for name in names if (d / name).is_file()]
    if not found:
        raise AssetNotFoundError(f"No {gender} body model in {d}. Looked for: {', '.join(names)}. {_HOWTO}")
    if len(found) > 1 and _is_v110(found[0]):
        others = [p for p in found[1:] if not _is_v110(p)]
        if others:
            return others[0]
    return found[0]


def _is_v110(path: Path) -> bool:
    """Whether a model file is SMPL v1.1.0, by name or by content (``smpl_release`` of a converted ``.npz``, else
    300 shape components; official ``.pkl`` files are read with the safe unpickler)."""
    if "v1.1.0" in path.name:
        return True
    if "v1.0.0" in path.name or path.name.startswith(("OPEN_", "STANDIN_")):
        return False
    try:
        if path.suffix == ".pkl":
            return smpl_release(load_smpl_pkl(path)) == "v1.1.0"
        with np.load(path, allow_pickle=False) as data:
            if "smpl_release" in data.files:
                return str(data["smpl_release"]) == "v1.1.0"
            return "shapedirs" in data.files and data["shapedirs"].shape[-1] == 300
    except (OSError, ValueError, zipfile.BadZipFile, BodyModelError):  # unreadable: the loader reports it later
        return False


def load_body_model(
    body_dir: str | os.PathLike[str],
    gender: str = "neutral",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    with_h36m: bool = True,
) -> BodyModel:
    """Load the body model of ``gender`` from a body folder.

    The folder holds the model file (see :func:`model_file_candidates`), ``J_regressor_extra.npy`` (9, V),
    ``J_regressor_h36m.npy`` (17, V; required when ``with_h36m``) and, for the stand-in, ``body.json``.

    Raises:
        AssetNotFoundError: a file is missing (the message lists what was looked for and how to get it).
        BodyModelError: a file is damaged or does not match the body.
    """
    g = _check_gender(gender)
    d = Path(body_dir).expanduser()
    path = find_model_file(d, g)
    data = load_model_arrays(path)
    num_vertices = check_model_arrays(data, str(path))
    if "body_name" in data:
        name = str(np.asarray(data["body_name"]))
    elif path.name.startswith("STANDIN_"):
        name = "standin"
    elif path.name.startswith("OPEN_"):
        name = OPEN_BODY_NAME
    else:
        name = "smpl"
        if g == "neutral" and smpl_release(data) == "v1.1.0":
            logger.warning(V110_NEUTRAL_WARNING.format(path=path))
    vertex_ids = _vertex_ids_for(data, d, num_vertices, str(path))
    extra_path = d / EXTRA_REGRESSOR_FILE
    if not extra_path.is_file():
        raise AssetNotFoundError(f"Missing {extra_path} (needed for the 49 joints). {_REGRESSOR_HOWTO}")
    extra = _load_npy(extra_path)
    h36m = None
    if with_h36m:
        h36m_path = d / H36M_REGRESSOR_FILE
        if not h36m_path.is_file():
            raise AssetNotFoundError(f"Missing {h36m_path} (needed for H36M joints). {_REGRESSOR_HOWTO}")
        h36m = _load_npy(h36m_path)
    body = BodyModel(
        data,
        J_regressor_extra=extra,
        J_regressor_h36m=h36m,
        vertex_ids=vertex_ids,
        name=name,
        gender=g,
        dtype=dtype,
        source=str(path),
    )
    logger.debug("loaded %s body (%s, %d vertices) from %s", name, g, num_vertices, path)
    return body.to(device=torch.device(device) if device is not None else torch.device("cpu"))


def load_mean_params(body_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read ``smpl_mean_params.npz`` of a body folder: ``pose`` (144,), ``shape`` (10,), ``cam`` (3,), float32."""
    path = Path(body_dir).expanduser() / MEAN_PARAMS_FILE
    if not path.is_file():
        raise AssetNotFoundError(
            f"Missing {path} (initial pose, shape and camera of the regressor). {_REGRESSOR_HOWTO}"
        )
    data = _load_npz(path)
    expect = {"pose": (144,), "shape": (NUM_BETAS,), "cam": (3,)}
    out: dict[str, np.ndarray] = {}
    for key, shape in expect.items():
        if key not in data:
            raise BodyModelError(f"{path} lacks the key {key!r} (expected pose, shape, cam).")
        arr = np.asarray(data[key], dtype=np.float32).reshape(-1)
        if arr.shape != shape:
            raise BodyModelError(f"{path}: {key} has {arr.size} values, expected {shape[0]}.")
        out[key] = arr.copy()
    return out


__all__ = [
    "BodyModel",
    "BodyOutput",
    "GENDERS",
    "MODEL_KEYS",
    "SMPL_NUM_VERTICES",
    "check_model_arrays",
    "find_model_file",
    "load_body_model",
    "load_mean_params",
    "load_model_arrays",
    "model_file_candidates",
]
