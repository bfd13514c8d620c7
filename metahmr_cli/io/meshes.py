"""Per-person mesh files (OBJ, PLY, GLB) written with trimesh, atomically.

Axes: the glTF / Blender convention by default (``frame="gltf"``): metres, x right, **y up**, z toward the viewer,
i.e. the camera frame of the result file (OpenCV: x right, y down, z forward) turned half a turn about x,
``(x, y, z) -> (x, -y, -z)``. A person who faces the camera in the photo stands upright in Blender or any glTF
viewer and faces +z; the meshes of one image still line up with each other (the camera sits at the origin looking
down -z). ``frame="opencv"`` writes the camera frame of the ``.npz`` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from metahmr_cli.files import atomic_path

MeshFormat = Literal["obj", "ply", "glb"]
MESH_FORMATS: tuple[str, ...] = ("obj", "ply", "glb")
MeshFrame = Literal["gltf", "opencv"]
MESH_FRAMES: tuple[str, ...] = ("gltf", "opencv")
MESH_GREY = (0.75, 0.75, 0.8)
"""Colour of a mesh written without one (that of the animated track exports)."""
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])
"""Rotation (half a turn about x) from the OpenCV camera frame to the glTF / Blender frame (y up)."""


def to_mesh_frame(vertices: np.ndarray, frame: MeshFrame = "gltf") -> np.ndarray:
    """(..., 3) camera-frame points (OpenCV axes) in the axes of the mesh files."""
    if frame not in MESH_FRAMES:
        raise ValueError(f"unknown mesh frame {frame!r}; use one of {MESH_FRAMES}")
    v = np.asarray(vertices, dtype=np.float64)
    return v @ OPENCV_TO_GLTF.T if frame == "gltf" else v


def write_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
               color_rgb: tuple[float, float, float] | None = None, *, frame: MeshFrame = "gltf") -> Path:
    """Write one triangle mesh; the format comes from the suffix of ``path`` (.obj, .ply or .glb).

    vertices: (V, 3) float in the camera frame of the results (OpenCV axes); faces: (F, 3) int; color_rgb:
    optional uniform colour in [0, 1] (PLY keeps it per vertex, GLB as its material; grey without one); frame: axes
    of the file (see the module docstring). Every format gets smooth vertex normals. A rotation keeps the winding,
    so faces stay outward.
    """
    import trimesh

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format '{path.suffix}' for {path}; use one of {MESH_FORMATS}")
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim == 2 and vertices.shape[1] == 3:
        vertices = to_mesh_frame(vertices, frame)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"faces index outside 0..{len(vertices) - 1}")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    # smooth vertex normals in every format (without them Blender and most viewers shade the body faceted)
    options: dict[str, object] = {"include_normals": True}
    if fmt == "glb":
        # a material (the person's colour, else grey) rather than vertex colours: glTF viewers and Blender then
        # light the body as a surface
        from trimesh.visual import TextureVisuals
        from trimesh.visual.material import PBRMaterial

        rgb = np.clip(color_rgb if color_rgb is not None else MESH_GREY, 0, 1)
        mesh.visual = TextureVisuals(material=PBRMaterial(
            name="body", baseColorFactor=[*(float(c) for c in rgb), 1.0], metallicFactor=0.1, roughnessFactor=0.7))
    elif fmt == "ply":
        options = {"vertex_normal": True}
        if color_rgb is not None:
            rgba = np.array([*(np.clip(color_rgb, 0, 1) * 255), 255], dtype=np.uint8)
            mesh.visual.vertex_colors = np.tile(rgba, (len(vertices), 1))
    _ = mesh.vertex_normals  # computed before export (area-weighted face normals; a rotation keeps them outward)
    with atomic_path(path) as tmp:
        mesh.export(str(tmp), file_type=fmt, **options)
    return path


def write_person_meshes(stem: str | Path, vertices: np.ndarray, faces: np.ndarray, fmt: MeshFormat,
                        colors: list[tuple[float, float, float]] | None = None, *,
                        frame: MeshFrame = "gltf") -> list[Path]:
    """Write one mesh per person as ``<stem>_person<NN>.<fmt>``.

    vertices: (P, V, 3) camera frame (OpenCV axes); faces: (F, 3). Returns the written paths in person order.
    """
    stem = Path(stem)
    paths = []
    for i, v in enumerate(np.asarray(vertices)):
        p = stem.with_name(f"{stem.name}_person{i:02d}.{fmt}")
        write_mesh(p, v, faces, None if colors is None else colors[i], frame=frame)
        paths.append(p)
    return paths
