"""Batched activation patching: many patch specs per forward, each forward resumed at its lowest patched layer.

For one (clean, corrupted) pair the engine records both runs once, then packs up to `max_batch` specs
into the batch dimension of a forward that starts from the cached residual stream at the lowest layer any
of them patches (layers below a patch cannot change). Results are a tidy table: one row per (sample, spec).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cache import ActivationCache
from ..corrupt import Pair
from ..hooks import Edit, PrefixKV, hooked, layer_inputs, run_from_layer, suffix_kwargs
from ..metrics import METRICS, final_metrics, restoration
from ..models.base import HookedLALM
from ..record import clean_run, record
from .spec import DIRECTIONS, PatchSpec


@dataclass
class PatchResult:
    """Tidy results: one row per (sample, spec), one column per metric and its normalized restoration."""

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)


@contextmanager
def embed_noise(lalm: HookedLALM, noise: torch.Tensor | None) -> Iterator[None]:
    """Add `noise` (positions, d) to the decoder's input embeddings (the Gaussian audio-embedding corruption)."""
    if noise is None:
        yield
        return

    def add(mod, args, kwargs):
        x = kwargs["inputs_embeds"]
        return args, {**kwargs, "inputs_embeds": x + noise.to(x.device, x.dtype)}

    h = lalm.decoder.register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


@dataclass
class _Runs:
    clean: ActivationCache
    corrupt: ActivationCache
    layer_kwargs: dict
    kv: dict = field(default_factory=dict)  # "clean"/"corrupt" -> (keys, values) per layer, made on first use


def run_kv(lalm: HookedLALM, pair: Pair, which: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer attention keys and values of the clean or corrupted run (for prefix reuse)."""
    if which == "clean":
        run = clean_run(lalm, pair.clean)
        return run.keys, run.values
    batch, noise = pair.corrupt, pair.embed_noise
    with torch.no_grad(), embed_noise(lalm, noise):
        cache = lalm.model(**batch.to(lalm.device, lalm.dtype).tensors, use_cache=True, logits_to_keep=1).cache
    return [la.keys for la in cache.layers], [la.values for la in cache.layers]


def record_pair(lalm: HookedLALM, pair: Pair, sites: set[str]) -> _Runs:
    """Record clean and corrupted runs (kept on the model's device) and the decoder-layer arguments."""
    sites = sorted(sites | {"resid_pre"})
    clean = (
        clean_run(lalm, pair.clean).cache if sites == ["resid_pre"] else record(lalm, pair.clean, sites, device=None)
    )
    kw: dict = {}
    with embed_noise(lalm, pair.embed_noise), layer_inputs(lalm, kw):
        corrupt = record(lalm, pair.corrupt, sites, device=None)
    return _Runs(clean, corrupt, kw["kwargs"])


def _edits(
    specs: Sequence[PatchSpec], pair: Pair, donor: ActivationCache, device: torch.device, offset: int = 0
) -> dict:
    """One edit per (site, layer): rows of the batch whose spec patches there take the donor's activation.

    With `offset`, the forward holds positions offset.. only, and masks and sources are cut to match.
    """
    by_key: dict[tuple[str, int], list[tuple[int, PatchSpec]]] = defaultdict(list)
    for row, s in enumerate(specs):
        by_key[(s.site, s.layer)].append((row, s))
    regions = pair.clean.regions[0]
    edits: dict[tuple[str, int], Edit] = {}
    for key, rows in by_key.items():
        src = donor[key][:, offset:]
        mask = torch.zeros((len(specs), *src.shape[1:-1]), dtype=torch.bool, device=device)
        for row, s in rows:
            pos = [p - offset for p in s.resolve(regions)]
            if s.head is None:
                mask[row, pos] = True
            else:
                mask[row, pos, s.head] = True

        def edit(x: torch.Tensor, src=src, mask=mask) -> torch.Tensor:
            return torch.where(mask.unsqueeze(-1), src.to(x.dtype), x)

        edits[key] = edit
    return edits


def _run_chunk(lalm: HookedLALM, pair: Pair, runs: _Runs, specs: Sequence[PatchSpec], skip: bool) -> torch.Tensor:
    """Final-position logits (len(specs), vocab) with each spec applied to its own batch row."""
    direction = specs[0].direction
    base, donor = (runs.corrupt, runs.clean) if direction == "denoise" else (runs.clean, runs.corrupt)
    n, length = len(specs), pair.clean.length
    regions = pair.clean.regions[0]
    # positions before the first patched one cannot change: compute only the suffix, reading prefix keys/values
    p0 = min(min(s.resolve(regions)) for s in specs) if skip else 0
    kwargs, prefix = runs.layer_kwargs, None
    if p0 > 0:
        which = "corrupt" if direction == "denoise" else "clean"
        if which not in runs.kv:
            runs.kv[which] = run_kv(lalm, pair, which)
        prefix = PrefixKV(*runs.kv[which], p0, n)
        kwargs = suffix_kwargs(runs.layer_kwargs, p0, length, lalm.dtype)
    edits = _edits(specs, pair, donor, lalm.device, offset=p0)
    with torch.no_grad(), hooked(lalm, edits=edits):
        if skip:
            start = min(s.layer for s in specs)
            h0 = base[("resid_pre", start)][:, p0:].expand(n, -1, -1).contiguous()
            return lalm.unembed(run_from_layer(lalm, h0, start, kwargs, prefix)[:, -1]).float()
        batch = (pair.corrupt if direction == "denoise" else pair.clean).repeat(n)
        noise = pair.embed_noise if direction == "denoise" else None
        with embed_noise(lalm, noise):
            return lalm.forward(batch)[:, -1].float()


def _by_direction(specs: Sequence[PatchSpec]) -> list[list[PatchSpec]]:
    """Specs split by direction (a forward patches one run), high layers first so chunks skip the most."""
    return [sorted((s for s in specs if s.direction == d), key=lambda s: (-s.layer, s.site)) for d in DIRECTIONS]


def patch(
    lalm: HookedLALM,
    pairs: Sequence[Pair],
    specs: Sequence[PatchSpec] | None = None,
    label_ids: Sequence[int] = (),
    max_batch: int = 64,
    skip_layers: bool = True,
    progress: bool = True,
    spec_fn=None,
) -> PatchResult:
    """Run every spec on every (clean, corrupted) pair; `spec_fn(pair)` may give per-pair specs (e.g. sweeps).

    `max_batch` bounds how many patched rows share one forward; `skip_layers=False` runs full forwards
    (the reference path the fast one is tested against).
    """
    rows: list[dict] = []
    work = [(p, _by_direction(spec_fn(p) if spec_fn else specs)) for p in pairs]
    total = sum(-(-len(g) // max_batch) for _, groups in work for g in groups)
    bar = tqdm(total=total, desc="patching", unit="fwd", disable=not progress)
    for pair, groups in work:
        runs = record_pair(lalm, pair, {s.site for g in groups for s in g})
        ref = {}
        for name, run in (("clean", runs.clean), ("corrupt", runs.corrupt)):
            m = final_metrics(run.final_logits, label_ids, pair.label, runs.clean.final_logits)
            ref[name] = {k: float(v[0]) for k, v in m.items()}
        for group in groups:
            i = 0
            while i < len(group):
                chunk = group[i : i + max_batch]
                try:
                    logits = _run_chunk(lalm, pair, runs, chunk, skip_layers)
                except torch.OutOfMemoryError:
                    if max_batch == 1:
                        raise
                    max_batch = max(1, max_batch // 2)  # back off and retry this chunk smaller; keep the new size
                    if lalm.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                i += len(chunk)
                met = final_metrics(logits, label_ids, pair.label, runs.clean.final_logits.to(logits.device))
                rest = {k: restoration(met[k], ref["clean"][k], ref["corrupt"][k]) for k in METRICS}
                for r, s in enumerate(chunk):
                    row = {
                        "sample": pair.sample,
                        "layer": s.layer,
                        "site": s.site,
                        "position": s.label,
                        "head": s.head,
                        "direction": s.direction,
                        "corruption": pair.corruption["kind"],
                    }
                    row.update({k: float(met[k][r]) for k in METRICS})
                    row.update({f"{k}_restored": float(rest[k][r]) for k in METRICS})
                    row.update({f"clean_{k}": ref["clean"][k] for k in METRICS})
                    row.update({f"corrupt_{k}": ref["corrupt"][k] for k in METRICS})
                    rows.append(row)
                bar.update(1)
    bar.close()
    meta = {"corruptions": {p.sample: p.corruption for p in pairs}, "skip_layers": skip_layers, "max_batch": max_batch}
    # max_batch is the size that fit: lower than asked for if a chunk ran out of memory
    return PatchResult(pd.DataFrame(rows), meta)
