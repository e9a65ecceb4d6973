"""Steering: a vector added to the residual stream entering a layer at the final position, each row of a batch with
its own (layer, alpha, vector, keep), all rows resumed together from the lowest edited layer on the final position
alone (the other positions' keys and values come from the recorded clean run). AudioLens' enrichment (an earlier
layer's state mixed into a deeper one) and the steer analysis (a direction from the data) are this one intervention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hooks import PrefixKV, hooked, run_from_layer, suffix_kwargs
from .metrics import wide
from .models.base import Batch, HookedLALM
from .record import clean_run


@dataclass(frozen=True)
class Addition:
    """resid_pre[layer] at the final position becomes keep * h + alpha * vector."""

    layer: int
    alpha: float
    vector: torch.Tensor  # (d_model,)
    keep: float = 1.0


def steered_logits(
    lalm: HookedLALM, batch: Batch, additions: Sequence[Addition], rows: Sequence[int] | None = None
) -> torch.Tensor:
    """Final-position logits (len(additions), vocab), or only vocabulary `rows`: row r with addition r applied."""
    run = clean_run(lalm, batch)
    n, p0 = len(additions), batch.length - 1
    edits = {}
    for la in sorted({a.layer for a in additions}):
        add = torch.zeros((n, 1, lalm.d_model), dtype=lalm.dtype, device=lalm.device)
        keep = torch.ones((n, 1, 1), dtype=lalm.dtype, device=lalm.device)
        for r, a in enumerate(additions):
            if a.layer == la:
                add[r, 0] = a.vector.to(lalm.device, lalm.dtype) * a.alpha
                keep[r] = a.keep
        edits[("resid_pre", la)] = lambda x, add=add, keep=keep: x * keep + add
    start = min(a.layer for a in additions)
    prefix, kwargs = PrefixKV(run.keys, run.values, p0), suffix_kwargs(run.layer_kwargs, p0, batch.length, lalm.dtype)
    h0 = run.cache[("resid_pre", start)][:, p0:].expand(n, -1, -1).contiguous()
    ids = None if rows is None else torch.tensor(list(rows), device=lalm.device)
    with torch.no_grad(), hooked(lalm, edits=edits):
        return wide(lalm.unembed(run_from_layer(lalm, h0, start, kwargs, prefix)[:, -1], ids))
