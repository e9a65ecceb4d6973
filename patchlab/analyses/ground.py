"""The grounding coefficient: how much of the answer the audio positions carry against the text, per layer, from the
patching rows; with `screen`, the screened estimates over every clip, AtP's agreement with real patching, and
(with `screen_tol`) a second phase that patches more clips until every layer's interval is narrow enough."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from .. import verdicts as V
from ..grounding import GroundingResult, grounding
from ..io import write_table
from ..report import plots
from ..screen import estimate, topup, topup_shares
from ..vocabulary import METRICS
from .base import Analysis, Float, Int, Merged, Options, ShardContext
from .patch import patch_rows, random_share


class GroundOptions(Options):
    metric: Literal[METRICS] = "logit_diff"  # type: ignore[valid-type]
    tol: Float = Field(0.05, ge=0)
    n_boot: Int = Field(1000, ge=10)
    level: Float = Field(0.95, gt=0, lt=1)
    # screen every clip by attribution patching and patch this share of them for real (None: all for real)
    screen: Float | None = Field(None, gt=0, le=1)
    # ... and every clip whose clean - corrupt logit difference is below this (its restorations, ratios over a
    # small gap, are the heavy tail of the per-layer means): a take-all stratum, 0 for none
    screen_gap: Float = Field(1.0, ge=0)
    # ... then a second phase: more clips patched per region until every layer's interval half-width is within
    # this (in restoration units; two-phase sampling sized by the first phase's residuals)
    screen_tol: Float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _tol_needs_screen(self) -> GroundOptions:
        if self.screen_tol is not None and self.screen is None:
            raise ValueError("screen_tol sizes the second phase of screening: give ground.screen too")
        return self


def ground(table: pd.DataFrame, exp) -> GroundingResult:
    """Grounding of patching rows under the experiment's `ground` options (clips whose answer no patch changes
    dropped)."""
    g = exp.ground
    return grounding(table, g.metric, g.tol, g.n_boot, g.level, seed=exp.seed, drop_unchanged=True)


class Ground(Analysis):
    name = "ground"
    Options = GroundOptions
    second_phase = "topup"

    def merge(self, m: Merged) -> None:
        if "patch" in m.tables and self.wanted(m.exp):
            for track, g in random_share(m.tables["patch"], m.exp).groupby("track", sort=False):
                res = ground(g, m.exp)
                per_layer = res.per_layer
                per_layer.insert(0, "track", track)
                write_table(m.out / "tables" / f"grounding_{track}.csv", per_layer)
                m.track_summary(track)["grounding"] = res.overall
                m.ground_rows[track] = res.per_sample
                m.tested += [(track, v) for v in V.grounding_verdicts(track, res.per_sample, m.exp.seed)]
                path = plots.grounding_curves(per_layer, m.out / "plots" / f"grounding_{track}.png",
                                              f"{track}: grounding over {res.overall['n_samples']} clips",
                                              handover=res.overall)  # fmt: skip
                m.plot(f"Grounding: {track}", path)
        if m.table("screen") is not None:
            self._screening(m)

    def _screening(self, m: Merged) -> None:
        """Per track: the screened per-layer region restorations over all clips, and AtP's agreement with real
        patching on the verified ones (patchlab.screen)."""
        out, opts = m.out, m.exp.ground
        scr = m.tables["screen"]
        write_table(out / "tables" / "screen_atp.csv", scr)
        empty = pd.DataFrame(columns=["track", "sample", "direction", "site", "position"])
        second = m.tables.get("topup", empty)
        if len(second):
            write_table(out / "tables" / "screen_topup.csv", second)
        real = pd.concat([m.tables.get("patch", empty), second], ignore_index=True)
        small_gap, tol = opts.screen_gap, opts.screen_tol
        for track, g in scr.groupby("track", sort=False):
            per_layer, agreement = estimate(g, real[real["track"] == track], opts.level, small_gap)
            per_layer.insert(0, "track", track)
            write_table(out / "tables" / f"screened_grounding_{track}.csv", per_layer)
            path = plots.screened_curves(per_layer, out / "plots" / f"screened_grounding_{track}.png",
                                         f"{track}: region restorations over every clip, screened by AtP")  # fmt: skip
            m.plot(f"Screened grounding: {track}", path)
            width = float((per_layer["hi"] - per_layer["lo"]).max())
            take_all = int(g.loc[g["gap"].abs() < small_gap, "sample"].nunique())
            agreement.update(share=opts.screen, screen_gap=small_gap, n_clips_take_all=take_all,
                             max_interval_width=width if np.isfinite(width) else None)  # fmt: skip
            if tol is not None:  # the second phase: which clips it added per region, and whether the target was met
                added = second[second["track"] == track].groupby("position")["sample"].nunique()
                half = per_layer.groupby("position").apply(lambda p: float((p["hi"] - p["lo"]).max() / 2))
                agreement.update(screen_tol=tol, n_clips_topped_up={str(k): int(v) for k, v in added.items()},
                                 max_half_width={str(k): v for k, v in half.items()},
                                 tol_met=bool(np.isfinite(half).all() and (half <= tol + 1e-12).all()))  # fmt: skip
            if not np.isfinite(width):
                agreement["note"] = (
                    "fewer than 3 clips verified outside the take-all stratum: the estimates have no interval"
                    " (raise ground.screen)"
                )
            m.track_summary(track)["screening"] = agreement

    def plan_second(self, exp, track: str, first: Callable[[str], pd.DataFrame]) -> dict[str, tuple[str, ...]]:
        """With `screen_tol`: the clips and regions `patchlab.screen.topup` adds to a screened track."""
        g = exp.ground
        if g.screen_tol is None:
            return {}
        atp = first("screen")
        if atp.empty:
            return {}
        shares = topup_shares(atp, first("patch"), g.screen, g.screen_gap, g.screen_tol, g.level)
        return topup(atp.groupby("sample", sort=False)["gap"].first(), shares, g.screen, exp.seed, g.screen_gap)

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """A top-up shard: its clips patched for real at the regions each is now verified for."""
        tables = []
        for regions in dict.fromkeys(payload.values()):  # clips verified for the same regions patched together
            todo = [ctx.pairs[s.id] for s in ctx.samples if s.id in ctx.pairs and payload[s.id] == regions]
            tables.append(patch_rows(ctx.lalm, ctx.exp, todo, ctx.labels, ctx.track, skipped=ctx.skipped,
                                     regions=regions.split("+")))  # fmt: skip
        tables = [t for t in tables if len(t)]
        return {"topup": pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()}
