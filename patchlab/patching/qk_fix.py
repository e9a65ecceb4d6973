"""AtP*'s query/key fix (Kramar et al. 2024, arXiv 2403.00745): a patch's effect through a layer's attention
pattern is computed exactly (softmax recomputed with the patched query and key), not through the softmax's
gradient, which misses effects when attention saturates; from the pattern onward the estimate stays linear.

Applied to `resid_pre` at (layer, position): patching it sets that layer's query, key and value at the position
to their clean values, so the layer's query/key path is replaced by the exact pattern change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..metrics import wide
from ..models.base import HookedLALM

NAME = "patchlab_qk"


@dataclass
class AttentionRecord:
    """Per decoder layer, in call order: post-rotary queries (H, T, D), keys (H_kv, T, D), pattern (H, T, T)."""

    query: list[torch.Tensor] = field(default_factory=list)
    key: list[torch.Tensor] = field(default_factory=list)
    pattern: list[torch.Tensor] = field(default_factory=list)
    scaling: list[float] = field(default_factory=list)


_active: list[AttentionRecord] = []


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with the pattern materialized (and kept in the graph) so AtP* can read it and its gradient."""
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (query @ k.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[..., : k.shape[-2]]
    pattern = wide(scores).softmax(-1).to(query.dtype)
    if _active:
        rec = _active[-1]
        if pattern.requires_grad:
            for t in (query, key, pattern):
                t.retain_grad()
        rec.query.append(query)
        rec.key.append(key)
        rec.pattern.append(pattern)
        rec.scaling.append(scaling)
    return (pattern @ v).transpose(1, 2).contiguous(), pattern


ALL_ATTENTION_FUNCTIONS.register(NAME, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def capture_attention(lalm: HookedLALM) -> Iterator[AttentionRecord]:
    """Run the decoder's attention through `_attention` and record every layer's queries, keys and pattern."""
    config = lalm.decoder.config
    before = config._attn_implementation
    rec = AttentionRecord()
    config._attn_implementation = NAME
    _active.append(rec)
    try:
        yield rec
    finally:
        _active.pop()
        config._attn_implementation = before


def pattern_change(
    q_clean: torch.Tensor,
    k_clean: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    grad: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """For each position p: sum over heads and queries of (A' - A) . dMetric/dA, where A' is the causal pattern
    with p's query and key set to their clean values (one batch row: q (H, T, D), k (H_kv, T, D), grad (H, T, T))."""
    out_dtype = wide(grad).dtype  # computed in float64, returned in the run's precision (at least float32)
    q_clean, k_clean, q, k, grad = (t.double() for t in (q_clean, k_clean, q, k, grad))
    heads, n, _ = q.shape
    k, k_clean = k.repeat_interleave(heads // k.shape[0], 0), k_clean.repeat_interleave(heads // k.shape[0], 0)
    causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    scores = ((q @ k.mT) * scaling).masked_fill(~causal, float("-inf"))
    log_z = scores.logsumexp(-1, keepdim=True)
    a = (scores - log_z).exp()
    total = (a * grad).sum(-1, keepdim=True)
    # rows i > p: only key p changes, so row i's normalizer changes by one term
    e = ((q @ k_clean.mT) * scaling - log_z).exp().masked_fill(~causal, 0.0)
    r = 1 - a + e
    col = ((total - a * grad) / r + e / r * grad - total).masked_fill(~causal.tril(-1), 0.0)
    # row p: its query changes too, so the whole row is recomputed
    row_scores = (q_clean @ k.mT) * scaling
    idx = torch.arange(n, device=q.device)
    row_scores[:, idx, idx] = (q_clean * k_clean).sum(-1) * scaling
    row = (row_scores.masked_fill(~causal, float("-inf")).softmax(-1) * grad).sum(-1) - total[..., 0]
    return (col.sum((0, 1)) + row.sum(0)).to(out_dtype)


def qk_terms(clean: AttentionRecord, corrupt: AttentionRecord, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For resid_pre at every position of `layer` (batch row 0): the exact pattern change's effect, and the
    query/key gradient terms of plain AtP that it replaces."""
    qc, kc = clean.query[layer][0].detach(), clean.key[layer][0].detach()
    q, k, pattern = corrupt.query[layer], corrupt.key[layer], corrupt.pattern[layer]
    linear = ((qc - q[0].detach()) * q.grad[0]).sum((0, 2)) + ((kc - k[0].detach()) * k.grad[0]).sum((0, 2))
    exact = pattern_change(qc, kc, q[0].detach(), k[0].detach(), pattern.grad[0], corrupt.scaling[layer])
    return exact, linear


def qk_correction(clean: AttentionRecord, corrupt: AttentionRecord, layer: int) -> torch.Tensor:
    """AtP* minus AtP for resid_pre at every position of `layer`: exact pattern term minus the terms it replaces."""
    exact, linear = qk_terms(clean, corrupt, layer)
    return (exact.double() - linear.double()).to(wide(linear).dtype)
