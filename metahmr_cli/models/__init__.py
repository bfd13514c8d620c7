"""Networks: backbones, the iterative SMPL regressor, builders and checkpoint I/O."""

from __future__ import annotations

from .builders import LAYOUTS, LayoutSpec, build_network, build_regressor, layout_for
from .checkpoints import (
    CHECKPOINT_KINDS,
    BackboneInitReport,
    LoadedNetworks,
    detect_network,
    export_state_dict,
    file_identifier,
    import_state_dict,
    load_backbone_init,
    load_layout_state_dict,
    load_networks,
    load_torch_file,
    network_spec,
    recorded_body,
    save_networks,
    write_random_checkpoint,
)
from .regressor import Regressor, default_mean_params

__all__ = [
    "CHECKPOINT_KINDS",
    "LAYOUTS",
    "BackboneInitReport",
    "LayoutSpec",
    "LoadedNetworks",
    "Regressor",
    "build_network",
    "build_regressor",
    "default_mean_params",
    "detect_network",
    "export_state_dict",
    "file_identifier",
    "import_state_dict",
    "layout_for",
    "load_backbone_init",
    "load_layout_state_dict",
    "load_networks",
    "load_torch_file",
    "network_spec",
    "recorded_body",
    "save_networks",
    "write_random_checkpoint",
]
