"""metahmr: 3D human mesh recovery with Meta-HMR (dual-network test-time optimisation)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
