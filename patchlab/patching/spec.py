"""Patch specs: (layer, site, positions, direction[, head]), and builders for region and per-position sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PatchlabError
from ..hooks import check_site
from ..regions import Regions
from ..vocabulary import REGION_NAMES

DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True)
class PatchSpec:
    """Patch `site` at `layer` over `positions` (a region name or explicit indices).

    denoise: clean activations into the corrupted run (is this enough to restore? sufficiency);
    noise: corrupted activations into the clean run (does breaking this hurt? necessity).
    """

    layer: int
    site: str = "resid_pre"
    positions: str | tuple[int, ...] = "audio"
    direction: str = "denoise"
    head: int | None = None

    def __post_init__(self) -> None:
        check_site(self.site)
        if self.direction not in DIRECTIONS:
            raise PatchlabError(f"unknown direction {self.direction!r}", "use 'denoise' or 'noise'")
        if isinstance(self.positions, str) and self.positions not in REGION_NAMES:
            raise PatchlabError(f"unknown region {self.positions!r}", f"use one of {', '.join(REGION_NAMES)}")
        if (self.head is None) != (self.site != "head_out"):
            raise PatchlabError("a head index goes with site 'head_out' and only with it", "set head= for head_out")

    def resolve(self, regions: Regions) -> tuple[int, ...]:
        if isinstance(self.positions, str):
            return regions.positions(self.positions)
        bad = [p for p in self.positions if not 0 <= p < regions.length]
        if bad:
            raise PatchlabError(f"positions {bad} outside a sequence of {regions.length}", "use 0..length-1")
        return tuple(self.positions)

    @property
    def label(self) -> str | int:
        """How the positions read in a table: the region name, the single index, or 'i,j,...'."""
        if isinstance(self.positions, str):
            return self.positions
        return self.positions[0] if len(self.positions) == 1 else ",".join(map(str, self.positions))


def sweep(
    n_layers: int, length: int, site: str = "resid_pre", direction: str = "denoise", layers: list[int] | None = None
) -> list[PatchSpec]:
    """One spec per (layer, position): the layer x position heatmap."""
    return [PatchSpec(la, site, (p,), direction) for la in (layers or range(n_layers)) for p in range(length)]


def region_specs(
    n_layers: int,
    regions: tuple[str, ...] = ("audio", "text", "final", "all"),
    site: str = "resid_pre",
    direction: str = "denoise",
    layers: Sequence[int] | None = None,
) -> list[PatchSpec]:
    """One spec per (layer, region): per-layer region curves (at every layer, or at `layers`)."""
    return [PatchSpec(la, site, r, direction) for la in (layers or range(n_layers)) for r in regions]
