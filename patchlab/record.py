"""Record a clean or corrupted run: one forward, an ActivationCache of the chosen sites, layers and positions.

Three interchangeable hook paths give the same cache: plain torch hooks (default), TransformerLens'
TransformerBridge (families it supports), and nnsight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cache import ActivationCache
from .errors import PatchlabError, nonfinite_fix
from .hooks import check_site, hooked
from .metrics import wide
from .models.base import Batch, HookedLALM
from .vocabulary import RECORD_SITES

BACKENDS = ("torch", "transformer_lens", "nnsight")


def record(
    lalm: HookedLALM,
    batch: Batch,
    sites: Sequence[str] = RECORD_SITES,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    backend: str = "torch",
    kv: list | None = None,
) -> ActivationCache:
    """Run `batch` once and cache `sites` at `layers` (all by default) and `positions` (all by default).

    `device=None` keeps activations on the model's device; `dtype` casts them (e.g. torch.float16 to save memory).
    With `kv` (a list, torch hooks), the same forward also appends every layer's attention keys and values to it.
    """
    for s in sites:
        check_site(s)
    layers = list(range(lalm.n_layers)) if layers is None else list(layers)
    pos = tuple(range(batch.length)) if positions is None else tuple(positions)
    if any(not -batch.length <= p < batch.length for p in pos):
        raise PatchlabError(f"positions {pos} fall outside a sequence of {batch.length}", "pick positions in range")
    index = torch.tensor(pos, device=lalm.device)

    def keep(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().index_select(1, index.to(x.device))
        x = x.to(device) if device is not None else x
        return x.to(dtype) if dtype is not None else x

    inputs = batch.to(lalm.device, lalm.dtype).tensors
    if backend == "torch":
        raw: dict[tuple[str, int], torch.Tensor] = {}
        reads = {(s, la): (lambda x, k=(s, la): raw.__setitem__(k, keep(x))) for s in sites for la in layers}
        with torch.no_grad(), hooked(lalm, reads=reads):
            out = lalm.model(**inputs, use_cache=kv is not None, logits_to_keep=1)
        logits, acts = out.logits, raw
        if kv is not None:
            kv += [[la.keys for la in out.cache.layers], [la.values for la in out.cache.layers]]
    elif backend == "transformer_lens":
        from .backends.tlens import record_tl

        acts, logits = record_tl(lalm, inputs, sites, layers, keep)
    elif backend == "nnsight":
        from .backends.nnsight_trace import record_nnsight

        acts, logits = record_nnsight(lalm, inputs, sites, layers, keep)
    else:
        raise PatchlabError(f"unknown hook path {backend!r}", f"use one of {', '.join(BACKENDS)}")
    final = wide(logits[:, -1].detach()).cpu()
    check_finite(acts, final, batch, lalm.dtype)
    return ActivationCache(acts, pos, list(batch.regions), final, backend)


def check_finite(acts: dict, final: torch.Tensor, batch: Batch, dtype: torch.dtype) -> None:
    """A NaN or inf anywhere (typically float16 overflow) is an error naming the first layer it appears at."""
    if torch.isfinite(final).all() and all(torch.isfinite(a).all() for a in acts.values()):
        return
    bad = sorted((la, s) for (s, la), a in acts.items() if not torch.isfinite(a).all())
    where = f"layer {bad[0][0]} ({bad[0][1]})" if bad else "the final logits"
    ids = [m.get("id", "?") for m in batch.meta] or ["?"]
    raise PatchlabError(
        f"NaN/inf in the activations of {', '.join(map(str, ids))} from {where} on, in {dtype}",
        nonfinite_fix(dtype),
    )


@dataclass
class CleanRun:
    """What the analyses of one clip resume from: its unedited run's `resid_pre` at every layer (and final logits),
    the decoder-layer arguments, and every layer's attention keys and values."""

    cache: ActivationCache
    layer_kwargs: dict
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def clean_run(lalm: HookedLALM, batch: Batch) -> CleanRun:
    """The unedited run of `batch`, computed once and shared (knockout, enrichment and patching's clean side read the
    same one); kept for the last few inputs, keyed by the inputs' bytes and the weights' version (an in-place edit
    of the weights is a new key). Call it outside any edits."""
    from .hooks import layer_inputs
    from .models.memo import input_key

    key = (input_key((), batch.tensors), lalm.weights_version())
    if key in lalm.run_memo:
        lalm.run_memo.move_to_end(key)
        return lalm.run_memo[key]
    kw: dict = {}
    kv: list = []
    with layer_inputs(lalm, kw):
        cache = record(lalm, batch, ["resid_pre"], device=None, kv=kv)
    run = CleanRun(cache, kw["kwargs"], *kv)
    lalm.run_memo[key] = run
    while len(lalm.run_memo) > 4:
        lalm.run_memo.popitem(last=False)
    return run
