"""``import metahmr``: the public API of metahmr (the same objects as ``metahmr_cli``'s; see ``docs/api.md``)."""

from __future__ import annotations

from typing import Any

import metahmr_cli as _impl

__version__ = _impl.__version__
__all__ = list(_impl.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_impl, name)


def __dir__() -> list[str]:
    return sorted(__all__)
