"""Model adapters (one per LALM family) and the shared HookedLALM interface."""

from .base import Adapter, Batch, HookedLALM, Prompt
from .registry import ADAPTERS, families, load, make_tiny, register

__all__ = ["ADAPTERS", "Adapter", "Batch", "HookedLALM", "Prompt", "families", "load", "make_tiny", "register"]
