"""patchlab: logit lens, activation patching and grounding for large audio-language models.

The public names load lazily (PEP 562), so `import patchlab` and `patchlab --help` do not import torch.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

_PUBLIC = {
    "ActivationCache": ".cache",
    "Batch": ".models",
    "HookedLALM": ".models",
    "PatchlabError": ".errors",
    "Prompt": ".models",
    "Regions": ".regions",
    "critical_layer": ".lens",
    "families": ".models",
    "ground": ".grounding",
    "grounding": ".grounding",
    "lens": ".lens",
    "lens_logits": ".lens",
    "load": ".models",
    "load_translators": ".tuned",
    "make_tiny": ".models",
    "record": ".record",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'patchlab' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


class _Package(types.ModuleType):
    """Keeps `patchlab.lens`, `.record`, `.grounding` the functions when their submodules are imported later."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _PUBLIC:
            self.__dict__.pop(name, None)  # the submodule stays in sys.modules; the name resolves lazily
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
