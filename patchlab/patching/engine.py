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
from ..hooks import Edit, PrefixKV, _first, hooked, layer_inputs, run_from_layer, suffix_kwargs
from ..metrics import final_metrics, restoration, wide
from ..models.base import HookedLALM
from ..record import clean_run, record
from ..vocabulary import METRICS
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
    kv: dict = field(default_factory=dict)  # "clean"/"corrupt" -> (keys, values) per layer (clean: on first use)

    @property
    def diverge(self) -> int:
        """The first position whose decoder input differs between the two runs (before it, both runs are the same
        at every layer: attention is causal); the length when none differs."""
        a, b = self.clean[("resid_pre", 0)][0], self.corrupt[("resid_pre", 0)][0]
        differ = (a != b).any(-1).nonzero()
        return int(differ[0]) if len(differ) else a.shape[0]


def _kv(lalm: HookedLALM, pair: Pair, runs: _Runs, which: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer attention keys and values of the clean or corrupted run (for prefix reuse): the corrupted run's
    were kept when it was recorded; the clean run's are those of its shared clean run."""
    if which not in runs.kv:
        run = clean_run(lalm, pair.clean)
        runs.kv[which] = (run.keys, run.values)
    return runs.kv[which]


def record_pair(lalm: HookedLALM, pair: Pair, sites: set[str]) -> _Runs:
    """Record clean and corrupted runs (kept on the model's device, the corrupted one with its keys and values) and
    the decoder-layer arguments."""
    sites = sorted(sites | {"resid_pre"})
    clean = (
        clean_run(lalm, pair.clean).cache if sites == ["resid_pre"] else record(lalm, pair.clean, sites, device=None)
    )
    kw: dict = {}
    kv: list = []
    with embed_noise(lalm, pair.embed_noise), layer_inputs(lalm, kw):
        corrupt = record(lalm, pair.corrupt, sites, device=None, kv=kv)
    return _Runs(clean, corrupt, kw["kwargs"], {"corrupt": tuple(kv)})


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


def _run_chunk(
    lalm: HookedLALM, pair: Pair, runs: _Runs, specs: Sequence[PatchSpec], skip: bool, key: tuple | None = None
) -> torch.Tensor:
    """Final-position logits (len(specs), vocab) with each spec applied to its own batch row (`key`: the
    (start, source) of a staircase chunk of resid_pre patches)."""
    if key is not None:
        return _staircase(lalm, pair, runs, specs, *key)
    direction = specs[0].direction
    base, donor = (runs.corrupt, runs.clean) if direction == "denoise" else (runs.clean, runs.corrupt)
    n, length = len(specs), pair.clean.length
    regions = pair.clean.regions[0]
    # positions before the first patched one cannot change: compute only the suffix, reading prefix keys/values
    p0 = min(min(s.resolve(regions)) for s in specs) if skip else 0
    kwargs, prefix = runs.layer_kwargs, None
    if p0 > 0:
        which = "corrupt" if direction == "denoise" else "clean"
        prefix = PrefixKV(*_kv(lalm, pair, runs, which), p0)
        kwargs = suffix_kwargs(runs.layer_kwargs, p0, length, lalm.dtype)
    edits = _edits(specs, pair, donor, lalm.device, offset=p0)
    with torch.no_grad(), hooked(lalm, edits=edits):
        if skip:
            start = min(s.layer for s in specs)
            h0 = base[("resid_pre", start)][:, p0:].expand(n, -1, -1).contiguous()
            return wide(lalm.unembed(run_from_layer(lalm, h0, start, kwargs, prefix)[:, -1]))
        batch = (pair.corrupt if direction == "denoise" else pair.clean).repeat(n)
        noise = pair.embed_noise if direction == "denoise" else None
        with embed_noise(lalm, noise):
            return wide(lalm.forward(batch)[:, -1])


def _start(spec: PatchSpec, regions, diverge: int) -> tuple[int, str]:
    """Where a resid_pre patch's forward must start and whose keys/values it reads before that position.

    Before the divergence both runs are the same at every layer, so a patch there changes nothing. Up to the first
    patched position at or after it, the patched run is the base run ("base": those positions' keys and values
    are the base run's). If the patch covers the divergence itself and every position up to q (the first it does
    not), positions before q hold the donor's inputs at the patched layer and depend on nothing else: they are the
    donor run's there and at every later layer ("donor"). So the audio region patched into a run on another clip's
    audio computes only what follows the audio, and so does the text region."""
    pos = sorted(set(spec.resolve(regions)))
    after = [p for p in pos if p >= diverge]
    if not after:  # only positions the two runs share: the patched run is the base run
        return regions.length, "base"
    if after[0] > diverge:
        return after[0], "base"
    patched, q = set(pos), diverge
    while q < regions.length and q in patched:
        q += 1
    return q, "donor"


def _staircase(
    lalm: HookedLALM, pair: Pair, runs: _Runs, specs: Sequence[PatchSpec], start: int, source: str
) -> torch.Tensor:
    """Final-position logits of resid_pre patches (sorted by layer) that share a start position and prefix source:
    one forward from the lowest patched layer, each row joining at its own layer with its patch already written
    (below its layer a row is the base run, which is recorded, so it is not recomputed)."""
    denoise = specs[0].direction == "denoise"
    base, donor = (runs.corrupt, runs.clean) if denoise else (runs.clean, runs.corrupt)
    regions, length = pair.clean.regions[0], pair.clean.length
    if start >= length:  # the patched run is exactly the donor's (all positions from the divergence patched) or the
        run = donor if source == "donor" else base  # base's (only positions before it)
        return wide(run.final_logits.to(lalm.device)).expand(len(specs), -1)
    kwargs = runs.layer_kwargs
    if start > 0:
        which = ("clean" if denoise else "corrupt") if source == "donor" else ("corrupt" if denoise else "clean")
        kwargs = suffix_kwargs(runs.layer_kwargs, start, length, lalm.dtype)
        kwargs["cache"] = PrefixKV(*_kv(lalm, pair, runs, which), start)
    h = None
    with torch.no_grad():
        for layer in range(specs[0].layer, lalm.n_layers):
            joining = [s for s in specs if s.layer == layer]
            if joining:
                mask = torch.zeros(len(joining), length - start, dtype=torch.bool, device=lalm.device)
                for r, s in enumerate(joining):
                    mask[r, [p - start for p in s.resolve(regions) if p >= start]] = True
                b, d = base[("resid_pre", layer)][:, start:], donor[("resid_pre", layer)][:, start:]
                new = torch.where(mask.unsqueeze(-1), d.to(b.dtype), b)
                h = new if h is None else torch.cat([h, new])
            h = _first(lalm.layers[layer](h, **kwargs))
        return wide(lalm.unembed(h[:, -1]))


def _plan(specs: Sequence[PatchSpec], regions, diverge: int, skip: bool, max_batch: int) -> list[tuple]:
    """Chunks of one direction's specs: resid_pre patches grouped by (start, prefix source) in layer order for the
    staircase; the rest (other sites, heads, or `skip=False`) as before, high layers first."""
    stairs: dict[tuple[int, str], list[PatchSpec]] = defaultdict(list)
    rest = []
    for s in specs:
        if skip and s.site == "resid_pre" and s.head is None:
            stairs[_start(s, regions, diverge)].append(s)
        else:
            rest.append(s)
    chunks = []
    for key, group in stairs.items():
        group = sorted(group, key=lambda s: s.layer)
        chunks += [(key, group[i : i + max_batch]) for i in range(0, len(group), max_batch)]
    return chunks + [(None, rest[i : i + max_batch]) for i in range(0, len(rest), max_batch)]


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
    total = sum(len(g) for _, groups in work for g in groups)
    bar = tqdm(total=total, desc="patching", unit="patch", disable=not progress)
    for pair, groups in work:
        runs = record_pair(lalm, pair, {s.site for g in groups for s in g})
        ref = {}
        for name, run in (("clean", runs.clean), ("corrupt", runs.corrupt)):
            m = final_metrics(run.final_logits, label_ids, pair.label, runs.clean.final_logits)
            ref[name] = {k: float(v[0]) for k, v in m.items()}
        for group in groups:
            todo = _plan(group, pair.clean.regions[0], runs.diverge, skip_layers, max_batch)
            while todo:
                key, chunk = todo.pop(0)
                try:
                    logits = _run_chunk(lalm, pair, runs, chunk, skip_layers, key)
                except torch.OutOfMemoryError:
                    if len(chunk) == 1:
                        raise
                    if len(chunk) <= max_batch:  # a chunk of a size thought to fit failed: halve it, and keep that
                        max_batch = max(1, len(chunk) // 2)
                    todo[:0] = [(key, chunk[i : i + max_batch]) for i in range(0, len(chunk), max_batch)]
                    if lalm.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
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
                bar.update(len(chunk))
    bar.close()
    meta = {"corruptions": {p.sample: p.corruption for p in pairs}, "skip_layers": skip_layers, "max_batch": max_batch}
    # max_batch is the size that fit: lower than asked for if a chunk ran out of memory
    return PatchResult(pd.DataFrame(rows), meta)
