"""Per-cell reference sweeps through peer libraries: one forward per (layer, position), as their helpers do.

Used to check patchlab's batched engine against TransformerLens' TransformerBridge and nnsight, and by
the benchmark as the peers' cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..corrupt import Pair
from ..errors import PatchlabError
from ..models.base import HookedLALM
from ..record import record

PEERS = ("transformer_lens", "nnsight", "torch")


def per_cell_sweep(
    lalm: HookedLALM,
    pair: Pair,
    site: str = "resid_pre",
    backend: str = "transformer_lens",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Denoising sweep, one forward per cell: final-position logits (layers, positions, vocab)."""
    if pair.embed_noise is not None:
        raise PatchlabError("per-cell peer sweeps take input-level corruptions", "use swap, silence or text")
    if backend == "transformer_lens":
        from ..backends.tlens import run_with_patch
    elif backend == "nnsight":
        from ..backends.nnsight_trace import run_with_patch
    elif backend == "torch":
        run_with_patch = _torch_patch
    else:
        raise PatchlabError(f"unknown peer {backend!r}", f"use one of {', '.join(PEERS)}")
    layers = list(range(lalm.n_layers)) if layers is None else list(layers)
    positions = list(range(pair.clean.length)) if positions is None else list(positions)
    clean = record(lalm, pair.clean, [site], layers, device=None)
    inputs = pair.corrupt.to(lalm.device, lalm.dtype).tensors
    out = torch.empty(len(layers), len(positions), lalm.lm_head.weight.shape[0])
    for i, la in enumerate(layers):
        src = clean[(site, la)]
        for j, p in enumerate(positions):

            def edit(act: torch.Tensor, src=src, p=p) -> torch.Tensor:
                act = act.clone()
                act[:, p] = src[:, p].to(act.dtype)
                return act

            out[i, j] = run_with_patch(lalm, inputs, site, la, edit)[0, -1].float().cpu()
    return out


def _torch_patch(lalm: HookedLALM, inputs: dict, site: str, layer: int, edit) -> torch.Tensor:
    from ..hooks import hooked

    with torch.no_grad(), hooked(lalm, edits={(site, layer): edit}):
        return lalm.model(**inputs, use_cache=False).logits
