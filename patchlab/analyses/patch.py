"""Activation patching by region: the clean run's audio, text and final positions patched into the corrupted run at
every layer (restoration per clip, region and layer). With `ground.screen`, every clip is screened by attribution
patching first and a seeded share of them (plus every clip with a small gap) is patched for real."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from ..corrupt import Pair
from ..data import LabelSet
from ..errors import PatchlabError
from ..grounding import regions_for
from ..io import write_table
from ..models.base import HookedLALM
from ..patching import patch, region_specs
from ..report import plots
from ..screen import region_atp, to_verify, verified
from ..vocabulary import CORRUPTIONS, RECORD_SITES
from .base import Analysis, Int, Merged, Options, ShardContext, checked_layers, skip_row


class PatchOptions(Options):
    corruption: Literal[CORRUPTIONS] = "swap"  # type: ignore[valid-type]
    site: Literal[RECORD_SITES] = "resid_pre"  # type: ignore[valid-type]
    max_batch: Int = Field(64, ge=1)
    layers: list[Int] | None = Field(None, min_length=1)  # region patching at these layers only (default: all)


def patch_rows(lalm: HookedLALM, exp, pairs: list[Pair], labels: LabelSet, track: str, condition: str | None = None,
               skipped: list | None = None, regions: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """Clean audio / text / final positions (or `regions`) patched into each corrupted run, at every layer (the
    `patch` section's site, layers and batch size).

    With `skipped` (a list), a pair whose run turns non-finite becomes a skipped row instead of stopping the run.
    """
    opts = exp.patch
    chosen = checked_layers(lalm, opts.layers, "patch.layers")
    regions = regions or regions_for(pairs)
    specs = region_specs(lalm.n_layers, regions, opts.site, layers=chosen)
    tables = []
    for p in pairs:
        try:
            res = patch(lalm, [p], specs, labels.token_ids, max_batch=opts.max_batch, progress=False)
        except PatchlabError as e:
            if skipped is None:
                raise
            skipped.append(skip_row(track, p.sample, "", e, "patch"))
            continue
        tables.append(res.table)
    t = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if t.empty:
        return t
    t.insert(0, "track", track)
    if condition is not None:
        t.insert(1, "condition", condition)
    t["donor"] = t["sample"].map({p.sample: p.corruption.get("donor", "") for p in pairs})
    return t


def random_share(patched: pd.DataFrame, exp) -> pd.DataFrame:
    """The clips a screened run verified at random (not its take-all stratum of small gaps), so that statistics and
    verdicts on real patching rest on a random sample of the dataset; all clips when not screening."""
    share = exp.ground.screen
    if share is None:
        return patched
    return patched[patched["sample"].map(lambda s: verified(s, share, exp.seed)).astype(bool)]


def _screen_rows(ctx: ShardContext, pairs: list[Pair]) -> pd.DataFrame:
    """Each clip's AtP estimates of region restoration at every layer (screening; see patchlab.screen)."""
    tables = []
    for p in pairs:
        try:
            tables.append(region_atp(ctx.lalm, p, ctx.labels.token_ids, regions_for([p])))
        except PatchlabError as e:
            ctx.skipped.append(skip_row(ctx.track, p.sample, "", e, "screen"))
    t = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not t.empty:
        t.insert(0, "track", ctx.track)
    return t


class Patch(Analysis):
    name = "patch"
    Options = PatchOptions
    clips = ("patch",)
    pairs = True

    def wanted(self, exp) -> bool:
        return "patch" in exp.analyses or "ground" in exp.analyses  # grounding reads the patching rows

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        if not ctx.paired:
            return {}
        out = {}
        todo = [ctx.pairs[s.id] for s in ctx.paired]
        ground, seed = ctx.exp.ground, ctx.exp.seed
        if ground.screen is not None:  # every clip screened by attribution, the verified share patched for real
            out["screen"] = scr = _screen_rows(ctx, todo)
            gaps = dict(zip(scr["sample"], scr["gap"])) if len(scr) else {}
            todo = [p for p in todo if to_verify(p.sample, gaps.get(p.sample), ground.screen, seed, ground.screen_gap)]
        out["patch"] = patch_rows(ctx.lalm, ctx.exp, todo, ctx.labels, ctx.track, skipped=ctx.skipped)
        return out

    def merge(self, m: Merged) -> None:
        if "patch" not in m.tables:
            return
        t = m.tables["patch"]
        write_table(m.out / "tables" / "patching.csv", t)
        for track, g in random_share(t, m.exp).groupby("track", sort=False):
            title = f"{track}: clean regions patched into the {m.exp.patch.corruption}-corrupted run"
            path = plots.region_curves(g, "logit_diff_restored", m.out / "plots" / f"patch_{track}.png", title)
            m.plot(f"Activation patching: {track}", path)
            s = m.track_summary(track)
            s["clean_accuracy"] = float(g.groupby("sample")["clean_acc"].first().mean())
            s["corrupt_accuracy"] = float(g.groupby("sample")["corrupt_acc"].first().mean())
