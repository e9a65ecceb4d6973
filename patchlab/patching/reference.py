"""Per-cell reference sweeps through peer libraries: one forward per (layer, position), as their helpers do.

Used to check patchlab's batched engine against TransformerLens' TransformerBridge and nnsight, and by
the benchmark as the peers' cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..corrupt import Pair
from ..errors import PatchlabError
from ..metrics import wide
from ..models.base import HookedLALM
from ..record import record

PEERS = ("transformer_lens", "nnsight", "torch")


def per_cell_sweep(
    lalm: HookedLALM,
    pair: Pair,
    site: str = "resid_pre",
    backend: str = "transformer_lens",
    cells: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Denoising sweep, one forward per (layer, position) cell (all cells, layer-major, by default):
    final-position logits (cells, vocab). The clean run is recorded once."""
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
    if cells is None:
        cells = [(la, p) for la in range(lalm.n_layers) for p in range(pair.clean.length)]
    clean = record(lalm, pair.clean, [site], sorted({la for la, _ in cells}), device=None)
    inputs = pair.corrupt.to(lalm.device, lalm.dtype).tensors
    out = torch.empty(len(cells), lalm.lm_head.weight.shape[0])
    for i, (la, p) in enumerate(cells):

        def edit(act: torch.Tensor, src=clean[(site, la)], p=p) -> torch.Tensor:
            act = act.clone()
            act[:, p] = src[:, p].to(act.dtype)
            return act

        out[i] = wide(run_with_patch(lalm, inputs, site, la, edit)[0, -1]).cpu()
    return out


def _torch_patch(lalm: HookedLALM, inputs: dict, site: str, layer: int, edit) -> torch.Tensor:
    from ..hooks import hooked

    with torch.no_grad(), hooked(lalm, edits={(site, layer): edit}):
        return lalm.model(**inputs, use_cache=False).logits


def knockout_by_hand(lalm: HookedLALM, batch, spec) -> torch.Tensor:
    """One knockout the plain way: the decoder's layers called one by one, each window layer given an attention
    mask written out entry by entry (causal, blocked query -> key pairs at the dtype's minimum, the diagonal kept;
    per head when the knockout names heads). Final-position logits (vocab,): the independent path `knockout` is
    checked against."""
    from ..hooks import layer_inputs

    regions = batch.regions[0]
    n = regions.length
    queries, keys = (set(p) for p in spec.blocked(regions))
    lo = torch.finfo(lalm.dtype).min
    heads = range(lalm.n_heads) if spec.heads is None else spec.heads
    mask = torch.zeros(1, lalm.n_heads if spec.heads is not None else 1, n, n, dtype=lalm.dtype)
    for head in range(mask.shape[1]):
        for i in range(n):
            for j in range(n):
                if j > i or (i in queries and j in keys and i != j and (spec.heads is None or head in heads)):
                    mask[0, head, i, j] = lo
    kw: dict = {}
    with layer_inputs(lalm, kw):  # the first layer's input (after any embedding multiplier) and arguments
        h = record(lalm, batch, ["resid_pre"], [0], device=None)[("resid_pre", 0)]
    window = spec.window(lalm.n_layers)
    with torch.no_grad():
        for la, layer in enumerate(lalm.layers):
            args = {
                **kw["kwargs"],
                "attention_mask": mask.to(lalm.device) if la in window else kw["kwargs"]["attention_mask"],
            }
            out = layer(h, **args)
            h = out[0] if isinstance(out, tuple) else out
        return wide(lalm.unembed(h[:, -1]))[0]
