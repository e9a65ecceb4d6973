"""The audio encoder's output, kept for the last few distinct inputs: one clip's audio is encoded once, not once
per forward (the lens, the answer, the clean and patched runs, knockouts and enrichment all re-run the same clip).

Exact by construction: a hit returns the tensors the same module computed for bit-identical inputs and unchanged
weights (the key holds the parameters' version counters, which every in-place edit advances). Only where no graph
is built (training runs the encoder as usual; attribution freezes the weights), and never while `fresh` is on
(hooks inside the encoder, e.g. encoder probes, must see it run).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def input_key(args: tuple, kwargs: dict) -> tuple:
    """A key of call arguments: each tensor by shape, dtype, device and a hash of its bytes; the rest by repr."""
    parts = []
    for name, v in [*enumerate(args), *sorted(kwargs.items())]:
        if isinstance(v, torch.Tensor):
            data = v.detach().contiguous().cpu()
            digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
            parts.append((name, tuple(v.shape), str(v.dtype), str(v.device), digest))
        else:
            parts.append((name, repr(v)))
    return tuple(parts)


def _needs_graph(module: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether a call under grad mode builds a graph: a parameter or a tensor input requires a gradient."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    return any(p.requires_grad for p in module.parameters()) or any(t.requires_grad for t in tensors)


class EncoderMemo:
    """Wraps `module.forward`: outputs for the `size` most recent distinct inputs are served from memory."""

    def __init__(self, module: nn.Module, size: int = 16) -> None:
        self.module, self.size = module, size
        self.compute = module.forward
        self.store: OrderedDict[tuple, Any] = OrderedDict()
        self.on = True
        module.forward = self.forward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.on or (torch.is_grad_enabled() and _needs_graph(self.module, args, kwargs)):
            return self.compute(*args, **kwargs)
        key = (input_key(args, kwargs), sum(p._version for p in self.module.parameters()))
        if key in self.store:
            self.store.move_to_end(key)
            return self.store[key]
        out = self.compute(*args, **kwargs)
        self.store[key] = out
        while len(self.store) > self.size:
            self.store.popitem(last=False)
        return out

    @contextmanager
    def fresh(self) -> Iterator[None]:
        """Within the block the encoder always runs (and its hooks fire)."""
        was, self.on = self.on, False
        try:
            yield
        finally:
            self.on = was
