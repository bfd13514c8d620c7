"""Write tests/data/open_body_reference.npz: anny's own output, for the tests of the bundled open body.

Run in an environment with anny (``pip install anny==0.6.2``) from the repository root:

    PYTHONPATH=. python scripts/open_body_reference.py [--out tests/data/open_body_reference.npz]

The reference is made with anny's public API only (``anny.Anny`` forward with the ``world-orient`` pose
parameterisation and its shape sampler), from what the bundled files declare about themselves: ``body.json``
(the SMPL segment of every anny bone, the A-pose -> T-pose rotations, the root position) and ``anny_vertex_index``
in ``OPEN_NEUTRAL.npz``. It holds:

- ``vertex_index`` (S,): the open body's vertices compared (every 7th, none of the three opening centres);
- ``heldout_tpose`` (B, S, 3) and ``heldout_population`` (B,): adult bodies drawn with anny's shape sampler
  (another seed than the generator's), in the T-pose and the model frame;
- ``anny_local_rotations`` (P, 24, 3, 3): poses given as rotations of the anny bones of each SMPL segment relative
  to their parent segment, in anny's world axes, relative to anny's rest A-pose;
- ``smpl_pose`` (P, 24, 3, 3): the same poses as SMPL-format local rotations relative to the open body's T-pose;
- ``posed_vertices`` (P, S, 3): anny's posed vertices of held-out body 0 (model frame, root fixed);
- ``anny_heights`` (3,) for ``populations`` (3,): height of anny's own rest mesh at the mean adult phenotype of each
  population (top of the head to the sole, all 13,718 vertices).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metahmr_cli.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS

DATA = Path(__file__).resolve().parents[1] / "metahmr_cli" / "body" / "open_data"
POPULATIONS = ("neutral", "male", "female")
GENDER_RANGES = {"neutral": (0.0, 1.0), "male": (0.0, 0.5), "female": (0.5, 1.0)}
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
SEED = 424242


def _rotvec(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def _global(local: np.ndarray) -> np.ndarray:
    g = local.copy()
    for j in range(1, 24):
        g[j] = g[SMPL_PARENTS[j]] @ local[j]
    return g


def _local(glob: np.ndarray) -> np.ndarray:
    r = glob.copy()
    for j in range(1, 24):
        r[j] = glob[SMPL_PARENTS[j]].T @ glob[j]
    return r


def _sample(model, population: str, n: int, seed: int) -> dict:
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    lo, hi = GENDER_RANGES[population]
    f64 = torch.float64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dist = SimpleShapeDistribution(
            model,
            morphological_age_distribution=torch.distributions.Uniform(
                torch.tensor(18.0, dtype=f64), torch.tensor(90.0, dtype=f64)
            ),
            gender_distribution=torch.distributions.Uniform(torch.tensor(lo, dtype=f64), torch.tensor(hi, dtype=f64)),
        )
        _, phen = dist.sample(n)
    return phen


def _poses(rng: np.random.Generator) -> np.ndarray:
    """(P, 24, 3, 3) local rotations in anny's axes (z up, -y front, +x the subject's left)."""
    hand_foot = (10, 11, 22, 23)  # segments whose joint is not a single anny bone head: left at rest
    poses = [np.tile(np.eye(3), (24, 1, 1))]  # anny's own rest (the A-pose)
    for scale in (0.35, 0.7):
        p = np.tile(np.eye(3), (24, 1, 1))
        for j in range(1, 24):
            if j not in hand_foot:
                axis = rng.normal(size=3)
                p[j] = _rotvec(axis / np.linalg.norm(axis) * rng.uniform(0.0, scale))
        p[0] = _rotvec([0.0, 0.0, rng.uniform(-1.0, 1.0)])
        poses.append(p)
    # A sitting/reaching pose: hips and knees flexed, elbows bent, arms forward, head and trunk turned.
    p = np.tile(np.eye(3), (24, 1, 1))
    p[0] = _rotvec([0.0, 0.0, 0.5])
    p[1] = p[2] = _rotvec([1.3, 0.0, 0.0])
    p[4] = p[5] = _rotvec([-1.4, 0.0, 0.0])
    p[3] = _rotvec([0.2, 0.0, 0.15])
    p[9] = _rotvec([0.1, 0.0, 0.2])
    p[15] = _rotvec([0.2, 0.0, -0.4])
    p[16] = _rotvec([0.9, 0.0, 0.3])
    p[17] = _rotvec([0.9, 0.0, -0.3])
    p[18] = _rotvec([0.0, 0.0, 1.2])
    p[19] = _rotvec([0.0, 0.0, -1.2])
    poses.append(p)
    return np.stack(poses)


def main() -> None:
    import anny
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/open_body_reference.npz"))
    args = parser.parse_args()

    info = json.loads((DATA / "body.json").read_text())
    with np.load(DATA / "OPEN_NEUTRAL.npz") as data:
        anny_index = data["anny_vertex_index"].astype(np.int64)
    segments = info["segments"]
    root_position = np.asarray(info["root_position"])
    t_local = np.asarray(info["tpose_from_anny_rest"]["rotations"])
    c = ANNY_TO_SMPL
    g_tpose = np.einsum("ij,njk,kl->nil", c.T, _global(t_local), c)  # anny frame

    model = anny.Anny(skinning_method="lbs").to(dtype=torch.float64)
    labels = list(model.bone_labels)
    bone_segment = np.zeros(len(labels), dtype=np.int64)
    for name, bones in segments.items():
        for b in bones:
            bone_segment[labels.index(b)] = SMPL_JOINT_NAMES.index(name)

    def pose(phen: dict, seg_rot: np.ndarray) -> np.ndarray:
        """anny vertices (N, 13718, 3), model frame, each segment turned by seg_rot (N, 24, 3, 3)."""
        with torch.no_grad():
            rest = model(None, phen)["rest_bone_poses"]
            g = torch.as_tensor(seg_rot)[:, bone_segment]
            delta = torch.zeros_like(rest)
            delta[..., :3, :3] = g @ rest[..., :3, :3]
            delta[..., 3, 3] = 1.0
            delta[:, 0, :3, 3] = rest[:, 0, :3, 3]
            out = model(delta, phen, pose_parameterization="world-orient")
        verts = out["vertices"].numpy()
        root = rest[:, 0, :3, 3].numpy()
        return (verts - root[:, None]) @ c.T + root_position

    keep = np.flatnonzero(anny_index >= 0)
    vertex_index = keep[::7]
    anny_vertices = anny_index[vertex_index]

    heldout, population = [], []
    for k, pop in enumerate(POPULATIONS):
        phen = _sample(model, pop, 2, SEED + k)
        v = pose(phen, np.broadcast_to(g_tpose, (2, 24, 3, 3)))
        heldout.append(v[:, anny_vertices])
        population += [pop, pop]
        if pop == "neutral":
            body0 = {key: val[:1] for key, val in phen.items()}
    heldout_arr = np.concatenate(heldout)

    rng = np.random.default_rng(SEED)
    anny_local = _poses(rng)
    smpl_pose, posed = [], []
    for p in anny_local:
        g_anny = _global(p)
        g_smpl = np.einsum("ij,njk,nlk,ml->nim", c, g_anny, g_tpose, c)  # C G_A G_T^T C^T
        smpl_pose.append(_local(g_smpl))
        posed.append(pose(body0, g_anny[None])[0, anny_vertices])

    heights = []
    for k, pop in enumerate(POPULATIONS):
        phen = _sample(model, pop, 20000, SEED + 100 + k)
        mean = {key: val.mean(dim=0, keepdim=True) for key, val in phen.items()}
        with torch.no_grad():
            rest = model(None, mean)["rest_vertices"][0].numpy()
        heights.append(float(np.ptp(rest[:, 2])))
        print(f"anny rest mesh at the mean adult {pop} phenotype: height {heights[-1]:.4f} m")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        vertex_index=vertex_index.astype(np.int32),
        heldout_tpose=heldout_arr.astype(np.float32),
        heldout_population=np.asarray(population),
        anny_local_rotations=anny_local.astype(np.float32),
        smpl_pose=np.stack(smpl_pose).astype(np.float32),
        posed_vertices=np.stack(posed).astype(np.float32),
        anny_heights=np.asarray(heights, dtype=np.float32),
        populations=np.asarray(POPULATIONS),
        anny_version=np.asarray(anny.__version__),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
