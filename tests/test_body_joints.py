"""Joint constants checked against hand-written facts (names, left/right mirroring, selections)."""

from __future__ import annotations

from metahmr_cli.body import joints as J


def _mirror_name(name: str) -> str:
    swaps = [("Left", "Right"), ("OP L", "OP R"), ("left_", "right_")]
    for a, b in swaps:
        if a in name:
            return name.replace(a, b)
        if b in name:
            return name.replace(b, a)
    return name


def test_joint_names_and_map():
    assert J.NUM_JOINTS == len(J.JOINT_NAMES) == 49
    assert J.JOINT_NAMES[0] == "OP Nose" and J.JOINT_NAMES[24] == "OP RHeel"
    assert J.JOINT_NAMES[25] == "Right Ankle" and J.JOINT_NAMES[48] == "Right Ear"
    assert set(J.JOINT_MAP) == set(J.JOINT_NAMES)
    assert J.JOINT_SELECTION[:9] == [24, 12, 17, 19, 21, 16, 18, 20, 0]
    # the 9 extra regressor rows land on GT slots 2, 3, 12..18
    assert [J.JOINT_SELECTION[25 + i] for i in (2, 3, 12, 13, 14, 15, 16, 17, 18)] == list(range(45, 54))
    assert max(J.JOINT_SELECTION) == 53
    assert slice(0, 25) == J.OPENPOSE_SLOTS and slice(25, 49) == J.GT_SLOTS


def test_smpl_tree():
    assert len(J.SMPL_JOINT_NAMES) == len(J.SMPL_PARENTS) == 24
    assert J.SMPL_PARENTS[0] == -1
    assert all(0 <= p < i for i, p in enumerate(J.SMPL_PARENTS) if i > 0)
    names = J.SMPL_JOINT_NAMES
    assert names[J.SMPL_PARENTS[names.index("left_elbow")]] == "left_shoulder"
    assert names[J.SMPL_PARENTS[names.index("right_hand")]] == "right_wrist"
    assert names[J.SMPL_PARENTS[names.index("head")]] == "neck"


def test_flip_permutations_mirror_names():
    for perm, names in (
        (J.J49_FLIP_PERM, J.JOINT_NAMES),
        (J.J24_FLIP_PERM, J.GT_JOINT_NAMES),
        (J.SMPL_JOINTS_FLIP_PERM, J.SMPL_JOINT_NAMES),
    ):
        assert sorted(perm) == list(range(len(names)))
        assert [names[p] for p in perm] == [_mirror_name(n) for n in names]
        assert [perm[p] for p in perm] == list(range(len(names)))
    assert len(J.SMPL_POSE_FLIP_PERM) == 72
    assert J.SMPL_POSE_FLIP_PERM[3:9] == [6, 7, 8, 3, 4, 5]


def test_evaluation_selections():
    expected17 = [
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
        "Head (H36M)",
        "Pelvis (MPII)",
        "Spine (H36M)",
        "Jaw (H36M)",
    ]
    assert [J.GT_JOINT_NAMES[i] for i in J.J24_TO_J17] == expected17
    assert J.J24_TO_J17[:14] == J.J24_TO_J14
    assert len(J.H36M_TO_J17) == 17 and sorted(J.H36M_TO_J17) == list(range(17))
    assert J.H36M_TO_J17[:14] == J.H36M_TO_J14


def test_vertex_ids_cover_smplx_extra_joints():
    assert len(J.SMPLX_EXTRA_JOINT_NAMES) == 21 == len(J.SMPL_VERTEX_IDS)
    assert set(J.SMPLX_EXTRA_JOINT_NAMES) == set(J.VERTEX_ID_NAMES)
    assert J.SMPL_VERTEX_IDS["nose"] == 332 and J.SMPL_VERTEX_IDS["RHeel"] == 6787


def test_vertex_ids_are_the_smpl_ids_of_smplx():
    """Every face/foot/fingertip vertex id equals the one smplx uses for SMPL (an independent table)."""
    from smplx.vertex_ids import vertex_ids

    assert vertex_ids["smplh"] == J.SMPL_VERTEX_IDS
    # the foot joints are six different vertices (a toe never falls back on the heel)
    feet = [J.SMPL_VERTEX_IDS[n] for n in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")]
    assert len(set(feet)) == 6


def test_smplx_extra_joint_order_matches_smplx():
    """smplx appends the vertex joints in the order of its vertex-id table (face, feet, fingertips), so the
    index 24 + k of ``JOINT_MAP`` names ``SMPLX_EXTRA_JOINT_NAMES[k]``."""
    from smplx.vertex_ids import vertex_ids

    face_feet = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe",
                 "RHeel"]
    assert J.SMPLX_EXTRA_JOINT_NAMES[:11] == face_feet
    assert set(J.SMPLX_EXTRA_JOINT_NAMES) == set(vertex_ids["smplh"])
    for op in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"):
        assert J.JOINT_MAP[f"OP {op}"] == 24 + face_feet.index(op), op
