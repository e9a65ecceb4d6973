"""patchlab's own small models (patchlab-mini, patchlab-mini-qformer): parts, modeling, training, building."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SMALL_MODELS = ("patchlab-mini", "patchlab-mini-qformer")  # loadable by name; built from committed weights


def small_model(name: str) -> tuple[Path, Callable[..., Path]]:
    """The committed connector weights of one of patchlab's small models and the function that builds its
    checkpoint (`build(out=None, weights=None, force=False)`)."""
    from .build import PROJECTOR, build
    from .qformer_build import CONNECTOR, build_qformer

    return {"patchlab-mini": (PROJECTOR, build), "patchlab-mini-qformer": (CONNECTOR, build_qformer)}[name]
