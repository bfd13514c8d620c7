"""Joint conventions: the SMPL kinematic tree, the 49-joint output set and the selections used for evaluation.

The 49 joints are the 25 OpenPose BODY_25 joints followed by the 24 "ground-truth" joints shared by the
training datasets (LSP/MPII/H36M supersets). They are picked from the 54 joints a body model produces:
the 45 joints of ``smplx.SMPL`` (24 kinematic joints, 5 face vertices, 6 foot vertices, 10 fingertips)
followed by the 9 joints regressed with ``J_regressor_extra`` (indices 45..53).

Left/right follow the subject: SMPL's left side is the +x side of the body in its rest pose (y up, z forward).
"""

from __future__ import annotations

from metahmr_cli.constants import NUM_SMPL_JOINTS

NUM_JOINTS = 49
NUM_SMPLX_JOINTS = 45
"""Joints returned by ``smplx.SMPL`` with hands and feet keypoints (24 kinematic + 21 vertex joints)."""
NUM_EXTRA_JOINTS = 9
"""Rows of ``J_regressor_extra``; appended after the 45 smplx joints (indices 45..53)."""

SMPL_JOINT_NAMES: list[str] = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
]
"""The 24 kinematic joints of SMPL, in model order."""

SMPL_PARENTS: list[int] = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
"""Parent of each SMPL joint (-1 for the root)."""

SMPL_VERTEX_IDS: dict[str, int] = {
    "nose": 332,
    "reye": 6260,
    "leye": 2800,
    "rear": 4071,
    "lear": 583,
    "rthumb": 6191,
    "rindex": 5782,
    "rmiddle": 5905,
    "rring": 6016,
    "rpinky": 6133,
    "lthumb": 2746,
    "lindex": 2319,
    "lmiddle": 2445,
    "lring": 2556,
    "lpinky": 2673,
    "LBigToe": 3216,
    "LSmallToe": 3226,
    "LHeel": 3387,
    "RBigToe": 6617,
    "RSmallToe": 6624,
    "RHeel": 6787,
}
"""Vertices of the 6890-vertex SMPL mesh used as extra joints (the same ids ``smplx`` uses for SMPL/SMPL-H)."""

VERTEX_ID_NAMES: list[str] = list(SMPL_VERTEX_IDS)
"""Names a body model must provide vertex ids for (face, fingertips, feet)."""

SMPLX_EXTRA_JOINT_NAMES: list[str] = (
    ["nose", "reye", "leye", "rear", "lear"]
    + ["LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
    + [f"{side}{tip}" for side in ("l", "r") for tip in ("thumb", "index", "middle", "ring", "pinky")]
)
"""Names of smplx joints 24..44 in the order smplx appends them."""

EXTRA_JOINT_NAMES: list[str] = [
    "Right Hip (LSP)",
    "Left Hip (LSP)",
    "Neck (LSP)",
    "Top of Head (LSP)",
    "Pelvis (MPII)",
    "Thorax (MPII)",
    "Spine (H36M)",
    "Jaw (H36M)",
    "Head (H36M)",
]
"""Rows of ``J_regressor_extra`` (joints 45..53)."""

OPENPOSE_JOINT_NAMES: list[str] = [
    "OP Nose",
    "OP Neck",
    "OP RShoulder",
    "OP RElbow",
    "OP RWrist",
    "OP LShoulder",
    "OP LElbow",
    "OP LWrist",
    "OP MidHip",
    "OP RHip",
    "OP RKnee",
    "OP RAnkle",
    "OP LHip",
    "OP LKnee",
    "OP LAnkle",
    "OP REye",
    "OP LEye",
    "OP REar",
    "OP LEar",
    "OP LBigToe",
    "OP LSmallToe",
    "OP LHeel",
    "OP RBigToe",
    "OP RSmallToe",
    "OP RHeel",
]

GT_JOINT_NAMES: list[str] = [
    "Right Ankle",
    "Right Knee",
    "Right Hip",
    "Left Hip",
    "Left Knee",
    "Left Ankle",
    "Right Wrist",
    "Right Elbow",
    "Right Shoulder",
    "Left Shoulder",
    "Left Elbow",
    "Left Wrist",
    "Neck (LSP)",
    "Top of Head (LSP)",
    "Pelvis (MPII)",
    "Thorax (MPII)",
    "Spine (H36M)",
    "Jaw (H36M)",
    "Head (H36M)",
    "Nose",
    "Left Eye",
    "Right Eye",
    "Left Ear",
    "Right Ear",
]

JOINT_NAMES: list[str] = OPENPOSE_JOINT_NAMES + GT_JOINT_NAMES
"""The 49 output joints: 25 OpenPose BODY_25 joints, then the 24 ground-truth joints."""

JOINT_IDS: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

JOINT_MAP: dict[str, int] = {
    # OpenPose joints
    "OP Nose": 24,
    "OP Neck": 12,
    "OP RShoulder": 17,
    "OP RElbow": 19,
    "OP RWrist": 21,
    "OP LShoulder": 16,
    "OP LElbow": 18,
    "OP LWrist": 20,
    "OP MidHip": 0,
    "OP RHip": 2,
    "OP RKnee": 5,
    "OP RAnkle": 8,
    "OP LHip": 1,
    "OP LKnee": 4,
    "OP LAnkle": 7,
    "OP REye": 25,
    "OP LEye": 26,
    "OP REar": 27,
    "OP LEar": 28,
    "OP LBigToe": 29,
    "OP LSmallToe": 30,
    "OP LHeel": 31,
    "OP RBigToe": 32,
    "OP RSmallToe": 33,
    "OP RHeel": 34,
    # ground-truth joints
    "Right Ankle": 8,
    "Right Knee": 5,
    "Right Hip": 45,
    "Left Hip": 46,
    "Left Knee": 4,
    "Left Ankle": 7,
    "Right Wrist": 21,
    "Right Elbow": 19,
    "Right Shoulder": 17,
    "Left Shoulder": 16,
    "Left Elbow": 18,
    "Left Wrist": 20,
    "Neck (LSP)": 47,
    "Top of Head (LSP)": 48,
    "Pelvis (MPII)": 49,
    "Thorax (MPII)": 50,
    "Spine (H36M)": 51,
    "Jaw (H36M)": 52,
    "Head (H36M)": 53,
    "Nose": 24,
    "Left Eye": 26,
    "Right Eye": 25,
    "Left Ear": 28,
    "Right Ear": 27,
}
"""Index, into the 54 joints (45 smplx + 9 extra), of each of the 49 output joints."""

JOINT_SELECTION: list[int] = [JOINT_MAP[name] for name in JOINT_NAMES]
"""``joints49 = joints54[:, JOINT_SELECTION]``."""

OPENPOSE_SLOTS = slice(0, 25)
GT_SLOTS = slice(25, 49)

# Flip permutations (mirror the body left <-> right).
J24_FLIP_PERM: list[int] = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22]
"""Flip permutation of the 24 ground-truth joints."""

J49_FLIP_PERM: list[int] = [
    0,
    1,
    5,
    6,
    7,
    2,
    3,
    4,
    8,
    12,
    13,
    14,
    9,
    10,
    11,
    16,
    15,
    18,
    17,
    22,
    23,
    24,
    19,
    20,
    21,
] + [25 + i for i in J24_FLIP_PERM]
"""Flip permutation of the 49 output joints."""

SMPL_JOINTS_FLIP_PERM: list[int] = [
    0,
    2,
    1,
    3,
    5,
    4,
    6,
    8,
    7,
    9,
    11,
    10,
    12,
    14,
    13,
    15,
    17,
    16,
    19,
    18,
    21,
    20,
    23,
    22,
]
"""Flip permutation of the 24 SMPL kinematic joints."""

SMPL_POSE_FLIP_PERM: list[int] = [3 * j + k for j in SMPL_JOINTS_FLIP_PERM for k in range(3)]
"""Flip permutation of the 72-d axis-angle pose (then negate the y and z components)."""

# Evaluation selections.
H36M_JOINT_NAMES: list[str] = [
    "Pelvis",
    "L_Hip",
    "L_Knee",
    "L_Ankle",
    "R_Hip",
    "R_Knee",
    "R_Ankle",
    "Spine",
    "Thorax",
    "Neck/Nose",
    "Head",
    "L_Shoulder",
    "L_Elbow",
    "L_Wrist",
    "R_Shoulder",
    "R_Elbow",
    "R_Wrist",
]
"""Rows of ``J_regressor_h36m`` as ``H36M_TO_J17`` reads them: it sends rows 4-6 to the "Right" leg slots and
rows 1-3 to the "Left" ones (the stand-in's regressor is built this way). Metrics do not depend on the labels
because predictions and ground truth go through the same regressor and selection."""

H36M_TO_J17: list[int] = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]
"""Indices into the 17 H36M-regressed joints giving the 17 evaluation joints (14 LSP + pelvis, spine, head)."""
H36M_TO_J14: list[int] = H36M_TO_J17[:14]
J24_TO_J17: list[int] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]
"""Indices into the 24 ground-truth joints giving the same 17 evaluation joints."""
J24_TO_J14: list[int] = J24_TO_J17[:14]

__all__ = [
    "EXTRA_JOINT_NAMES",
    "GT_JOINT_NAMES",
    "GT_SLOTS",
    "H36M_JOINT_NAMES",
    "H36M_TO_J14",
    "H36M_TO_J17",
    "J24_FLIP_PERM",
    "J24_TO_J14",
    "J24_TO_J17",
    "J49_FLIP_PERM",
    "JOINT_IDS",
    "JOINT_MAP",
    "JOINT_NAMES",
    "JOINT_SELECTION",
    "NUM_EXTRA_JOINTS",
    "NUM_JOINTS",
    "NUM_SMPLX_JOINTS",
    "NUM_SMPL_JOINTS",
    "OPENPOSE_JOINT_NAMES",
    "OPENPOSE_SLOTS",
    "SMPLX_EXTRA_JOINT_NAMES",
    "SMPL_JOINTS_FLIP_PERM",
    "SMPL_JOINT_NAMES",
    "SMPL_PARENTS",
    "SMPL_POSE_FLIP_PERM",
    "SMPL_VERTEX_IDS",
    "VERTEX_ID_NAMES",
]
