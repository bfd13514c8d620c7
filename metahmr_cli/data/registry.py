"""Dataset names -> files: the datasets config (TOML/JSON) and the built-in Meta-HMR file map.

A datasets config looks like (see ``train/datasets.example.toml``)::

    root = "/data/metahmr"            # relative paths below are relative to this (or to $METAHMR_DATA)
    npz_dir = "dataset_extras"        # optional, relative to root: where the .npz files are
    image_dir = "."                   # optional, relative to root: where the image folders are
    occluders = "VOC/pascal_occluders.npy"

    [datasets.3dpw]
    npz = "3dpw_train_w2d_smpl3d_gender.npz"   # relative to root/npz_dir
    images = "pw3d"                              # relative to root/image_dir
    downsample = 2

Names not given in the file keep the built-in defaults (:data:`DEFAULT_DATASETS`); entries in the file
override single fields of a built-in entry or add new names. Nothing is read from hard-coded absolute paths:
the root comes from the file (``root``, relative to the file's folder) or from ``METAHMR_DATA``.
Any ``.npz`` can also be used directly by path; its image root is then the npz's folder unless given.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config_file
from ..errors import ConfigError

__all__ = [
    "DATA_ENV",
    "DATASETS_CONFIG_ENV",
    "DEFAULT_DATASETS",
    "DatasetEntry",
    "DatasetSpec",
    "DatasetsConfig",
    "load_datasets_config",
    "resolve_dataset",
]

DATA_ENV = "METAHMR_DATA"
"""Environment variable naming the data root."""
DATASETS_CONFIG_ENV = "METAHMR_DATASETS_CONFIG"
"""Environment variable naming a datasets config file."""


@dataclass(frozen=True)
class DatasetEntry:
    """One named dataset of the config (paths may be relative).

    Attributes:
        npz: annotation file, relative to ``root/npz_dir`` unless absolute.
        images: image root (``imgname`` entries are relative to it), relative to ``root/image_dir``.
        downsample: integer factor by which images, keypoints and given focal lengths are reduced
            (2 for 3DPW as in the released code).
        occlusion: synthetic occlusion is allowed for this dataset (released: h36m and mpi-inf-3dhp).
        split: "train" or "test" (informational; training/evaluation pick datasets by name).
        description: free text.
    """

    npz: str
    images: str = "."
    downsample: int = 1
    occlusion: bool = False
    split: str = "train"
    description: str = ""


DEFAULT_DATASETS: dict[str, DatasetEntry] = {
    "h36m": DatasetEntry("h36m_mosh_train_fixname.npz", "h36m", occlusion=True, split="train",
                         description="Human3.6M train (S1,5,6,7,8), MoSh SMPL"),
    "h36m-p1": DatasetEntry("h36m_mosh_val_p1.npz", "h36m", split="test",
                            description="Human3.6M S9/S11 protocol 1 (all cameras)"),
    "h36m-p2": DatasetEntry("h36m_mosh_val_p2_fixname_openpose.npz", "h36m", split="test",
                            description="Human3.6M S9/S11 protocol 2 (frontal camera)"),
    "3dpw": DatasetEntry("3dpw_train_w2d_smpl3d_gender.npz", "pw3d", downsample=2, split="train",
                         description="3DPW train"),
    "3dpw-test": DatasetEntry("3dpw_test_w2d_smpl3d_gender_openpose.npz", "pw3d", downsample=2, split="test",
                              description="3DPW test"),
    "mpi-inf-3dhp": DatasetEntry("mpi_inf_3dhp_train_name_revised.npz", "mpii3d", occlusion=True, split="train",
                                 description="MPI-INF-3DHP train"),
    "mpi-inf-3dhp-test": DatasetEntry("mpi_inf_3dhp_valid_openpose.npz", "mpii3d", split="test",
                                      description="MPI-INF-3DHP test set"),
    "coco": DatasetEntry("coco_2014_smpl_train.npz", "coco", split="train",
                         description="COCO 2014 train with CLIFF pseudo-GT SMPL"),
    "coco-val": DatasetEntry("coco_2014_smpl_val_openpose.npz", "coco", split="test",
                             description="COCO 2014 val"),
    "mpii": DatasetEntry("mpii_smpl_w3d_train.npz", "mpii", split="train",
                         description="MPII with CLIFF pseudo-GT SMPL"),
}
"""The released Meta-HMR file map (file names only; the root comes from the config or $METAHMR_DATA)."""

_ENTRY_FIELDS = [f.name for f in dataclasses.fields(DatasetEntry)]
_TOP_KEYS = ["root", "npz_dir", "image_dir", "occluders", "datasets"]


@dataclass(frozen=True)
class DatasetSpec:
    """A resolved dataset: absolute paths plus flags.

    Attributes:
        name: config name, or the npz stem for a dataset given by path.
        npz: annotation file.
        image_root: folder that ``imgname`` entries are relative to.
        downsample: image/keypoint/focal reduction factor (1 or 2).
        occlusion: synthetic occlusion allowed.
        split: "train" or "test".
    """

    name: str
    npz: Path
    image_root: Path
    downsample: int = 1
    occlusion: bool = False
    split: str = "train"


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid: {', '.join(valid)})"


def _parse_entry(name: str, raw: Any, base: DatasetEntry | None, source: str) -> DatasetEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [datasets.{name}] must be a table, got {type(raw).__name__}.")
    for key in raw:
        if key not in _ENTRY_FIELDS:
            raise ConfigError(f"{source}: unknown key '{key}' in [datasets.{name}]{_closest(key, _ENTRY_FIELDS)}.")
    if base is None and "npz" not in raw:
        raise ConfigError(f"{source}: [datasets.{name}] is a new dataset and needs an 'npz' path.")
    values = dataclasses.asdict(base) if base is not None else {}
    values.update(raw)
    try:
        entry = DatasetEntry(
            npz=str(values["npz"]),
            images=str(values.get("images", ".")),
            downsample=int(values.get("downsample", 1)),
            occlusion=bool(values.get("occlusion", False)),
            split=str(values.get("split", "train")),
            description=str(values.get("description", "")),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value in [datasets.{name}]: {exc}") from exc
    if entry.downsample < 1:
        raise ConfigError(f"{source}: [datasets.{name}] downsample must be >= 1, got {entry.downsample}.")
    if entry.split not in ("train", "test"):
        raise ConfigError(f"{source}: [datasets.{name}] split must be 'train' or 'test', got '{entry.split}'.")
    return entry


@dataclass
class DatasetsConfig:
    """Parsed datasets config.

    Attributes:
        root: data root (absolute) or None (then $METAHMR_DATA is used at resolution time).
        npz_dir: folder of the npz files, relative to root unless absolute.
        image_dir: folder of the image folders, relative to root unless absolute.
        occluders: occluder file for synthetic occlusion, or None.
        datasets: name -> entry (built-ins merged with the file's entries).
        source: the file it was read from, or None for the built-in defaults.
    """

    root: Path | None = None
    npz_dir: str = "."
    image_dir: str = "."
    occluders: Path | None = None
    datasets: dict[str, DatasetEntry] = field(default_factory=lambda: dict(DEFAULT_DATASETS))
    source: Path | None = None

    def data_root(self) -> Path | None:
        """The root: the config's ``root`` or $METAHMR_DATA, or None when neither is set."""
        if self.root is not None:
            return self.root
        env = os.environ.get(DATA_ENV)
        return Path(env).expanduser() if env else None

    def _absolute(self, rel: str, sub: str, what: str, name: str) -> Path:
        p = Path(rel).expanduser()
        if p.is_absolute():
            return p
        sub_p = Path(sub).expanduser()
        if sub_p.is_absolute():
            return sub_p / p
        root = self.data_root()
        if root is None:
            where = f"the datasets config {self.source}" if self.source else "a datasets config (--datasets-config)"
            raise ConfigError(
                f"dataset '{name}': the {what} path '{rel}' is relative but no data root is set. Set "
                f"`root = \"/path/to/data\"` in {where} or the environment variable {DATA_ENV}."
            )
        return root / sub_p / p

    def names(self) -> list[str]:
        """All configured dataset names."""
        return list(self.datasets)

    def resolve(
        self,
        name_or_path: str | Path,
        *,
        image_root: str | Path | None = None,
        downsample: int | None = None,
        occlusion: bool | None = None,
    ) -> DatasetSpec:
        """Resolve a dataset name of the config or a path to an ``.npz``.

        Args:
            name_or_path: a configured name (e.g. "3dpw-test") or a path to an npz file (a file whose name starts
                with "3dpw"/"pw3d" is reduced by 2 like the configured 3DPW entries, as the released loader does).
            image_root: override of the image root (for a path: default = the npz's folder).
            downsample, occlusion: overrides of the entry's flags.
        Raises:
            ConfigError: unknown name (with the closest valid names) or no data root for relative paths.
        """
        key = str(name_or_path)
        if key in self.datasets:
            e = self.datasets[key]
            spec = DatasetSpec(
                name=key,
                npz=self._absolute(e.npz, self.npz_dir, "npz", key),
                image_root=self._absolute(e.images, self.image_dir, "images", key),
                downsample=e.downsample,
                occlusion=e.occlusion,
                split=e.split,
            )
        elif key.endswith(".npz") or os.sep in key or Path(key).expanduser().is_file():
            p = Path(key).expanduser().resolve()
            # the released loader halves every 3DPW image (and its keypoints and focal), named or given by path
            halved = p.stem.lower().startswith(("3dpw", "pw3d"))
            spec = DatasetSpec(name=p.stem, npz=p, image_root=p.parent, split="test" if "test" in p.stem else "train",
                               downsample=2 if halved else 1)
        else:
            raise ConfigError(
                f"unknown dataset '{key}'{_closest(key, self.names())}. Give a configured name or a path to "
                "an .npz file."
            )
        if image_root is not None:
            spec = dataclasses.replace(spec, image_root=Path(image_root).expanduser())
        if downsample is not None:
            spec = dataclasses.replace(spec, downsample=int(downsample))
        if occlusion is not None:
            spec = dataclasses.replace(spec, occlusion=bool(occlusion))
        return spec

    def occluders_path(self) -> Path | None:
        """The occluder file (absolute) or None."""
        if self.occluders is None:
            return None
        return self._absolute(str(self.occluders), ".", "occluders", "occluders")


def load_datasets_config(path: str | Path | None = None) -> DatasetsConfig:
    """Read a datasets config (TOML or JSON) and merge it over the built-in file map.

    Lookup when ``path`` is None: $METAHMR_DATASETS_CONFIG, then ``$METAHMR_DATA/datasets.toml``; without
    either the built-in defaults are returned (root from $METAHMR_DATA at resolution time).

    Raises:
        ConfigError: missing file, unknown keys (with the closest valid key), bad values.
    """
    if path is None:
        env = os.environ.get(DATASETS_CONFIG_ENV)
        if env:
            path = env
        elif os.environ.get(DATA_ENV):
            cand = Path(os.environ[DATA_ENV]).expanduser() / "datasets.toml"
            if cand.is_file():
                path = cand
    if path is None:
        return DatasetsConfig()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"datasets config {p} does not exist; copy train/datasets.example.toml, edit the root and pass it "
            "with --config."
        )

    raw = load_config_file(p)
    src = str(p)
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{src}: unknown key '{key}'{_closest(key, _TOP_KEYS)}.")
    cfg = DatasetsConfig(source=p.resolve())
    if "root" in raw:
        root = Path(str(raw["root"])).expanduser()
        cfg.root = root if root.is_absolute() else (p.resolve().parent / root)
    cfg.npz_dir = str(raw.get("npz_dir", "."))
    cfg.image_dir = str(raw.get("image_dir", "."))
    if raw.get("occluders"):
        occ = Path(str(raw["occluders"])).expanduser()
        if not occ.is_absolute() and cfg.root is None and not os.environ.get(DATA_ENV):
            occ = p.resolve().parent / occ
        cfg.occluders = occ
    sets = raw.get("datasets", {})
    if not isinstance(sets, dict):
        raise ConfigError(f"{src}: 'datasets' must be a table of [datasets.NAME] entries.")
    for name, entry in sets.items():
        cfg.datasets[str(name)] = _parse_entry(str(name), entry, DEFAULT_DATASETS.get(str(name)), src)
    return cfg


def resolve_dataset(
    name_or_path: str | Path, config: DatasetsConfig | str | Path | None = None, **overrides: Any
) -> DatasetSpec:
    """Shortcut: resolve one name/path with a config object, a config file path, or the defaults."""
    cfg = config if isinstance(config, DatasetsConfig) else load_datasets_config(config)
    return cfg.resolve(name_or_path, **overrides)
