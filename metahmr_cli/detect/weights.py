"""Find detector / keypoint model files by path or by name, without ever downloading."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from metahmr_cli import assets
from metahmr_cli.errors import AssetNotFoundError


def resolve_model_file(
    model: str | os.PathLike[str],
    *,
    subdir: str | Sequence[str],
    suffixes: Sequence[str],
    what: str,
    howto: str,
    weights: str | os.PathLike[str] | None = None,
    extra_dirs: Sequence[tuple[str, Path]] = (),
    alternatives: Sequence[str] = (),
) -> Path:
    """Resolve a model given by path or by file name; never downloads.

    A value containing a path separator (or an existing file) is a path and must exist. A bare name
    (``yolo11m.pt``, ``yolo11m``) is looked up in ``<weights root>/<subdir>/`` of every weights root (see
    :mod:`metahmr_cli.assets`; several ``subdir`` are tried in turn), then in ``extra_dirs`` and in the current
    folder, trying each of ``suffixes`` when the name has none, then the ``alternatives`` (other file names of
    the same model).

    Raises:
        AssetNotFoundError: listing every place looked and how to provide the file.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    is_path = os.sep in text or "/" in text or (os.altsep is not None and os.altsep in text)
    if is_path:
        raise AssetNotFoundError(f"{what} file {path} does not exist. {howto}")
    names = [text] if Path(text).suffix else [text + s for s in suffixes]
    names += [a for a in alternatives if a not in names]
    searched: list[tuple[str, Path]] = []
    subdirs = [subdir] if isinstance(subdir, str) else list(subdir)
    dirs = [(label, root / sd) for sd in subdirs for label, root in assets.weights_roots(weights)]
    dirs += list(extra_dirs)
    dirs.append(("current folder", Path.cwd()))
    for label, folder in dirs:
        for name in names:
            cand = folder / name
            searched.append((label, cand))
            if cand.is_file():
                return cand
    lines = [f"{what} {text!r} is not available locally. Looked for:"]
    lines += [f"  - {p}  [{label}]" for label, p in searched]
    lines.append(f"How to fix: {howto} Canonical folder: {assets.weights_root(weights) / subdirs[0]}")
    raise AssetNotFoundError("\n".join(lines))
