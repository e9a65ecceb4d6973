"""ActivationCache: recorded activations by (site, layer), for a batch of equal-length rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .regions import Regions


@dataclass
class ActivationCache:
    """Activations `acts[(site, layer)]` of shape (batch, positions, ...) and the final logits (batch, vocab)."""

    acts: dict[tuple[str, int], torch.Tensor]
    positions: tuple[int, ...]
    regions: list[Regions]
    final_logits: torch.Tensor | None = None
    backend: str = "torch"
    meta: dict = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, int]) -> torch.Tensor:
        return self.acts[key]

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.acts

    @property
    def sites(self) -> list[str]:
        return sorted({s for s, _ in self.acts})

    @property
    def layers(self) -> list[int]:
        return sorted({la for _, la in self.acts})

    def stack(self, site: str) -> torch.Tensor:
        """All recorded layers of one site: (layers, batch, positions, ...)."""
        return torch.stack([self.acts[(site, la)] for la in self.layers if (site, la) in self.acts])

    def max_abs_diff(self, other: ActivationCache) -> float:
        """Largest absolute difference over every shared (site, layer); raises if the keys differ."""
        if set(self.acts) != set(other.acts):
            raise KeyError(f"caches hold different keys: {sorted(set(self.acts) ^ set(other.acts))[:5]}")
        return max(float((self.acts[k].float() - other.acts[k].float()).abs().max()) for k in self.acts)
