"""patchlab: logit lens, activation patching and grounding for large audio-language models."""

from .cache import ActivationCache
from .errors import PatchlabError
from .grounding import ground, grounding
from .lens import critical_layer, lens, lens_logits
from .models import Batch, HookedLALM, Prompt, families, load, make_tiny
from .record import record
from .regions import Regions

__all__ = [
    "ActivationCache",
    "Batch",
    "HookedLALM",
    "PatchlabError",
    "Prompt",
    "Regions",
    "critical_layer",
    "families",
    "ground",
    "grounding",
    "lens",
    "lens_logits",
    "load",
    "make_tiny",
    "record",
]
__version__ = "0.1.0"
