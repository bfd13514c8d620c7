"""Offscreen rendering of recovered meshes: overlays on the input image, side views and overlay videos."""

from metahmr_cli.render.overlay import (
    MeshRenderer,
    RendererUnavailable,
    person_colors,
    track_colors,
)
from metahmr_cli.render.video import VideoWriter

__all__ = ["MeshRenderer", "RendererUnavailable", "VideoWriter", "person_colors", "track_colors"]
