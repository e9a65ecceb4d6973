"""patchlab's own small models (patchlab-mini, patchlab-mini-qformer and their phonetic revisions): parts,
modeling, training, building."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import PatchlabError

# loadable by name, built from committed weights; a revision shares its base model's recipe and architecture
REVISIONS = {"patchlab-mini-phonetic": "patchlab-mini", "patchlab-mini-qformer-phonetic": "patchlab-mini-qformer"}
SMALL_MODELS = ("patchlab-mini", "patchlab-mini-qformer", *REVISIONS)


def base_model(name: str) -> str:
    """The small model whose recipe and architecture `name` shares (itself for a base model)."""
    return REVISIONS.get(name, name)


def small_model(name: str) -> tuple[Path, Callable[..., Path]]:
    """The committed connector weights of one of patchlab's small models and the function that builds its
    checkpoint (`build(out=None, weights=None, force=False)`, by default into the cache folder of that name)."""
    from .build import PROJECTOR, build
    from .parts import cache_dir
    from .qformer_build import CONNECTOR, build_qformer

    weights = {
        "patchlab-mini": PROJECTOR,
        "patchlab-mini-qformer": CONNECTOR,
        "patchlab-mini-phonetic": PROJECTOR.with_name("projector_phonetic.safetensors"),
        "patchlab-mini-qformer-phonetic": CONNECTOR.with_name("qformer_connector_phonetic.safetensors"),
    }[name]
    if not weights.is_file():
        raise PatchlabError(
            f"{name}'s weights are not in this copy of patchlab ({weights.name})",
            f"use {base_model(name)}, or train them (`patchlab mini train --model {name}`, see its model card)",
        )
    write = build if base_model(name) == "patchlab-mini" else build_qformer

    def builder(out: Path | None = None, given: Path | None = None, force: bool = False) -> Path:
        return write(out or cache_dir() / name, given or weights, force)

    return weights, builder
