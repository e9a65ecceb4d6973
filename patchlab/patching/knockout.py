"""Attention knockout (Geva et al. 2023): block attention from a query region to a key region over a window of
layers, and watch the answer. Many knockouts share one forward (one per batch row), resumed at the lowest layer any
of them blocks and computed only from the first blocked query position on (nothing before either can change).

A blocked entry gets the dtype's minimum in the additive attention mask, as the causal mask does; a position always
keeps attending to itself, so no query row is ever left with nothing to attend to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import PatchlabError
from ..hooks import PrefixKV, additive, run_from_layer, suffix_kwargs
from ..metrics import final_metrics, wide
from ..models.base import Batch, HookedLALM
from ..record import CleanRun, clean_run
from ..regions import Regions
from ..vocabulary import METRICS, REGION_NAMES


@dataclass(frozen=True)
class KnockoutSpec:
    """Block attention from `query` positions to `key` positions at layers `start` .. `stop` - 1 (None: the last),
    in every attention head or in `heads` alone.

    Regions by name (final, text, audio, special, all) or explicit position tuples.
    """

    start: int
    stop: int | None = None
    query: str | tuple[int, ...] = "final"
    key: str | tuple[int, ...] = "audio"
    heads: tuple[int, ...] | None = None  # the attention heads blocked (None: all of them)

    def __post_init__(self) -> None:
        for r in (self.query, self.key):
            if isinstance(r, str) and r not in REGION_NAMES:
                raise PatchlabError(f"unknown region {r!r}", f"use one of {', '.join(REGION_NAMES)}")

    def window(self, n_layers: int) -> range:
        stop = n_layers if self.stop is None else self.stop
        if not 0 <= self.start < stop <= n_layers:
            raise PatchlabError(
                f"knockout window {self.start}..{stop - 1} is not inside layers 0..{n_layers - 1}",
                "give 0 <= start < stop <= number of layers",
            )
        return range(self.start, stop)

    def blocked(self, regions: Regions) -> tuple[tuple[int, ...], tuple[int, ...]]:
        def pos(r):
            return regions.positions(r) if isinstance(r, str) else tuple(r)

        q, k = pos(self.query), pos(self.key)
        if not q or not k:
            raise PatchlabError(
                f"knockout {self.query!r} -> {self.key!r} has an empty region in this prompt",
                "pick regions the prompt has (a prompt without text before the answer has no 'text' region)",
            )
        return q, k

    def first_changed(self, regions: Regions) -> int:
        """The first position the knockout can change: the first query after a key (earlier queries cannot see
        any key; the final position when none can)."""
        q, k = self.blocked(regions)
        seeing = [p for p in q if p > min(k)]
        return min(seeing) if seeing else regions.length - 1

    @property
    def label(self) -> str:
        def name(r):
            return r if isinstance(r, str) else ",".join(map(str, r))

        return f"{name(self.query)}->{name(self.key)}"


def window_specs(
    n_layers: int, pairs: Sequence[tuple[str, str]] = (("final", "audio"), ("text", "audio")), layers=None
) -> list[KnockoutSpec]:
    """Knockouts from layer l to the top, for each (query, key) region pair and each l (all layers by default)."""
    return [
        KnockoutSpec(la, None, q, k) for q, k in pairs for la in (layers if layers is not None else range(n_layers))
    ]


def block_mask(specs: Sequence[KnockoutSpec], regions: Regions) -> torch.Tensor:
    """(rows, length, length) booleans: True where a row's knockout blocks query i from key j (never i = j)."""
    n = regions.length
    out = torch.zeros(len(specs), n, n, dtype=torch.bool)
    for row, s in enumerate(specs):
        q, k = s.blocked(regions)
        out[row, torch.tensor(q)[:, None], torch.tensor(k)[None, :]] = True
    out &= ~torch.eye(n, dtype=torch.bool)
    return out


def head_rows(specs: Sequence[KnockoutSpec], n_heads: int) -> torch.Tensor | None:
    """(rows, heads) booleans: the heads each row's knockout blocks; None when every row blocks every head."""
    if all(s.heads is None for s in specs):
        return None
    out = torch.zeros(len(specs), n_heads, dtype=torch.bool)
    for row, s in enumerate(specs):
        bad = [h for h in s.heads or () if not 0 <= h < n_heads]
        if bad:
            raise PatchlabError(f"heads {bad} are outside 0..{n_heads - 1}", "list heads of the model")
        out[row, list(range(n_heads)) if s.heads is None else list(s.heads)] = True
    return out


@contextmanager
def knocked_out(lalm: HookedLALM, specs: Sequence[KnockoutSpec], regions: Regions) -> Iterator[None]:
    """Within the block, batch row r of a forward has knockout `specs[r]` applied (full or suffix forwards alike)."""
    impl = getattr(lalm.model.config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager"):
        raise PatchlabError(
            f"attention knockout edits the attention mask, which {impl!r} attention does not take",
            "load the model with attn_implementation='sdpa' or 'eager'",
        )
    blocks = block_mask(specs, regions).to(lalm.device)
    heads = head_rows(specs, lalm.n_heads)
    heads = heads.to(lalm.device)[:, :, None, None] if heads is not None else None
    windows = [s.window(lalm.n_layers) for s in specs]
    handles = []
    for layer in sorted({la for w in windows for la in w}):
        rows = torch.tensor([layer in w for w in windows], device=lalm.device)

        def edit(mod, args, kwargs, rows=rows):
            h = args[0] if args else kwargs["hidden_states"]
            q_len = h.shape[1]
            k_len = regions.length  # a suffix forward (q_len < length) reads the prefix from its cache
            base = additive(kwargs.get("attention_mask"), q_len, k_len, lalm.dtype, h.device)
            block = blocks[:, k_len - q_len :, :] & rows[:, None, None]
            lo = torch.finfo(lalm.dtype).min
            if heads is None:
                mask = base.expand(len(specs), 1, q_len, k_len).masked_fill(block[:, None], lo)
            else:  # a mask per head (the attention broadcasts a head dimension of 1 otherwise)
                mask = base.expand(len(specs), heads.shape[1], q_len, k_len).masked_fill(block[:, None] & heads, lo)
            return args, {**kwargs, "attention_mask": mask}

        handles.append(lalm.layers[layer].register_forward_pre_hook(edit, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def knockout_logits(
    lalm: HookedLALM, batch: Batch, specs: Sequence[KnockoutSpec], skip: bool = True, run: CleanRun | None = None
) -> torch.Tensor:
    """Final-position logits (len(specs), vocab), each row with its knockout; `skip=False` runs full forwards."""
    regions = batch.regions[0]
    n = len(specs)
    if not skip:
        with torch.no_grad(), knocked_out(lalm, specs, regions):
            return wide(lalm.forward(batch.repeat(n))[:, -1])
    run = run or clean_run(lalm, batch)
    cache, keys, values, layer_kwargs = run.cache, run.keys, run.values, run.layer_kwargs
    with torch.no_grad(), knocked_out(lalm, specs, regions):
        start = min(s.start for s in specs)
        p0 = min(s.first_changed(regions) for s in specs)
        kwargs, prefix = layer_kwargs, None
        if p0 > 0:
            prefix = PrefixKV(keys, values, p0)
            kwargs = suffix_kwargs(layer_kwargs, p0, regions.length, lalm.dtype)
        h0 = cache[("resid_pre", start)][:, p0:].expand(n, -1, -1).contiguous()
        return wide(lalm.unembed(run_from_layer(lalm, h0, start, kwargs, prefix)[:, -1]))


def knockout(
    lalm: HookedLALM,
    batches: Sequence[Batch],
    specs: Sequence[KnockoutSpec],
    label_ids: Sequence[int],
    truths: Sequence[int],
    max_batch: int = 64,
    skip_layers: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Every knockout on every clip (one prepared batch each, its true label index in `truths`): one row per
    (clip, knockout) with the answer's metrics knocked out, clean, and their change (knocked - clean)."""
    rows = []
    bar = tqdm(total=len(batches), desc="knockout", unit="clip", disable=not progress)
    for batch, truth in zip(batches, truths):
        # chunks of knockouts that change the same positions and blocks of high windows skip the most work
        first = {s: s.first_changed(batch.regions[0]) for s in specs}
        ordered = sorted(specs, key=lambda s: (-first[s], -s.start))
        chunks = []
        for p0 in dict.fromkeys(first[s] for s in ordered):
            group = [s for s in ordered if first[s] == p0]
            chunks += [group[i : i + max_batch] for i in range(0, len(group), max_batch)]
        run = clean_run(lalm, batch) if skip_layers else None
        clean_logits = wide(lalm.forward(batch)[:, -1]) if run is None else run.cache.final_logits.to(lalm.device)
        clean = {k: float(v[0]) for k, v in final_metrics(clean_logits, label_ids, truth, clean_logits).items()}
        for chunk in chunks:
            logits = knockout_logits(lalm, batch, chunk, skip_layers, run)
            met = final_metrics(logits, label_ids, truth, clean_logits)
            for r, s in enumerate(chunk):
                row = {"sample": batch.meta[0].get("id", "") if batch.meta else "", "knockout": s.label,
                       "query": s.label.split("->")[0], "key": s.label.split("->")[1], "start": s.start,
                       "stop": s.window(lalm.n_layers).stop}  # fmt: skip
                if s.heads is not None:
                    row["heads"] = "+".join(map(str, s.heads))
                row.update({k: float(met[k][r]) for k in METRICS})
                row.update({f"clean_{k}": clean[k] for k in METRICS})
                row.update({f"{k}_change": float(met[k][r]) - clean[k] for k in METRICS})
                rows.append(row)
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)
