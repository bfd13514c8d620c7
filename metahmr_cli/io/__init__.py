"""Inputs and outputs of ``metahmr process``: sources (images, videos, EXIF), result files, manifest, meshes."""

from metahmr_cli.io.writers import (
    SCHEMA_VERSION,
    FrameResult,
    Manifest,
    ManifestRecord,
    load_result_npz,
    read_manifest,
    validate_result_npz,
    write_result_npz,
)

__all__ = [
    "SCHEMA_VERSION",
    "FrameResult",
    "Manifest",
    "ManifestRecord",
    "load_result_npz",
    "read_manifest",
    "validate_result_npz",
    "write_result_npz",
]
