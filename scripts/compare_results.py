"""Compare two result folders of ``metahmr process``: every ``.npz`` array identical, bit for bit.

A refactoring must not change what ``process`` writes. Run the same command before and after the change into two
folders, then::

    python scripts/compare_results.py before/ after/            # the .npz arrays (exit 1 on a difference)
    python scripts/compare_results.py before/ after/ --files    # also the other files, byte for byte

Each ``.npz`` found below either folder is matched by its relative path; for each pair the keys, and for each key
the dtype, the shape and the bytes are compared (NaN equals NaN only where its bit pattern is the same). With
``--files`` the meshes, animations and renders are compared byte for byte too; ``manifest.jsonl`` and
``summary.json`` (which hold times and dates) are compared without their timing and date fields, and files
shipped with the package by their path inside it. Exit status: 0 when
everything compared is identical, 1 otherwise (each difference is listed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

VOLATILE_KEYS = frozenset({
    "started", "finished", "elapsed_s", "seconds", "stage_seconds", "time", "timestamp", "wall_s", "date",
    "images_per_s", "people_per_s", "per_worker", "timings", "host", "pid", "out", "command", "run_id",
    "started_at", "finished_at", "wall_seconds", "images_per_second", "people_per_second", "inputs",
})
"""Fields of the manifest and summary that differ between two runs of the same work (times, dates, places; the
inputs as typed on the command line: each manifest record names its input as a full path)."""


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def compare_npz(a: Path, b: Path) -> list[str]:
    """The differences between two ``.npz`` files (empty when every array is identical)."""
    problems: list[str] = []
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        ka, kb = set(za.files), set(zb.files)
        problems += [f"key {k!r} only in the first" for k in sorted(ka - kb)]
        problems += [f"key {k!r} only in the second" for k in sorted(kb - ka)]
        for key in sorted(ka & kb):
            x, y = za[key], zb[key]
            if x.dtype != y.dtype:
                problems.append(f"{key}: dtype {x.dtype} vs {y.dtype}")
            elif x.shape != y.shape:
                problems.append(f"{key}: shape {x.shape} vs {y.shape}")
            elif np.ascontiguousarray(x).tobytes() != np.ascontiguousarray(y).tobytes():
                if x.dtype.kind in "fc":
                    diff = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.size else 0.0
                    problems.append(f"{key}: values differ (largest difference {diff:.3g})")
                else:
                    problems.append(f"{key}: values differ")
    return problems


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "/metahmr_cli/" in obj:
        return obj.split("/metahmr_cli/", 1)[1]  # a file shipped with the package: where the checkout lives differs
    return obj


def _json_lines(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return sorted((_strip(json.loads(line)) for line in text.splitlines() if line.strip()),
                      key=lambda r: json.dumps(r, sort_keys=True))
    return _strip(json.loads(text))


def compare_file(a: Path, b: Path) -> list[str]:
    """The difference between two other result files: JSON without its volatile fields, the rest byte for byte."""
    if a.name in ("manifest.jsonl", "summary.json"):
        return [] if _json_lines(a) == _json_lines(b) else ["differs (beyond times and dates)"]
    return [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]


def compare_folders(first: Path, second: Path, *, other_files: bool = False) -> tuple[int, list[str]]:
    """(number of files compared, the differences as lines ``relative/path: what``)."""
    fa, fb = _files(first), _files(second)
    wanted = (lambda name: True) if other_files else (lambda name: name.endswith(".npz"))
    names_a = {n for n in fa if wanted(n)}
    names_b = {n for n in fb if wanted(n)}
    lines = [f"{n}: only in {first}" for n in sorted(names_a - names_b)]
    lines += [f"{n}: only in {second}" for n in sorted(names_b - names_a)]
    both = sorted(names_a & names_b)
    for name in both:
        check = compare_npz if name.endswith(".npz") else compare_file
        lines += [f"{name}: {p}" for p in check(fa[name], fb[name])]
    return len(both), lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("first", type=Path, help="a result folder")
    ap.add_argument("second", type=Path, help="the folder to compare it with")
    ap.add_argument("--files", action="store_true", help="compare the other files too (meshes, animations, "
                    "renders byte for byte; manifest and summary without times)")
    args = ap.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            print(f"{folder}: not a folder; give two result folders of `metahmr process`.", file=sys.stderr)
            return 2
    n, lines = compare_folders(args.first, args.second, other_files=args.files)
    for line in lines:
        print(line)
    what = "files" if args.files else ".npz files"
    if n == 0 and not lines:
        print(f"no {what} to compare in {args.first} and {args.second}", file=sys.stderr)
        return 2
    print(f"{n} {what} compared: " + ("identical" if not lines else f"{len(lines)} difference(s)"))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
