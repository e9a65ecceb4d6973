"""Patch specs, the batched patching engine, and per-cell reference paths."""

from .engine import PatchResult, patch
from .spec import DIRECTIONS, PatchSpec, region_specs, sweep

__all__ = ["DIRECTIONS", "PatchResult", "PatchSpec", "patch", "region_specs", "sweep"]
