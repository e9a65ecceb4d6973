"""Final-position metrics over a label set, and normalized restoration (patched - corrupt) / (clean - corrupt)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least float32: half-precision logits are widened for the metrics, float64 stays float64 (a float64
    run computes every number in float64, so no CPU kernel's float32 rounding reaches a pinned reference)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def final_metrics(
    logits: torch.Tensor, label_ids: Sequence[int], truth: int, clean_logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per row of final-position logits (rows, vocab): logit difference of the true label vs the strongest
    foil in the label set, its log-prob and prob over the vocabulary, label-set accuracy, KL(clean || row)."""
    logits = wide(logits)
    y = logits[:, list(label_ids)]
    foil = y.clone()
    foil[:, truth] = float("-inf")
    logp = logits.log_softmax(-1)
    clean_logp = wide(clean_logits).to(logits.dtype).log_softmax(-1).reshape(1, -1)
    return {
        "logit_diff": y[:, truth] - foil.max(-1).values,
        "logprob": logp[:, label_ids[truth]],
        "prob": logp[:, label_ids[truth]].exp(),
        "acc": (y.argmax(-1) == truth).to(logits.dtype),
        "kl": (clean_logp.exp() * (clean_logp - logp)).sum(-1).clamp_min(0),
    }


def restoration(patched: torch.Tensor, clean: float, corrupt: float, tol: float = 1e-6) -> torch.Tensor:
    """(patched - corrupt) / (clean - corrupt): 0 = still corrupted, 1 = clean restored; NaN where clean == corrupt."""
    den = clean - corrupt
    if abs(den) < tol:
        return torch.full_like(patched, float("nan"))
    return (patched - corrupt) / den
