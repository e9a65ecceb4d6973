"""AudioLens' enrichment: early-layer audio representations added to deeper layers, the setting chosen on one part
of the clips and tested on the rest."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from .. import verdicts as V
from ..data import build_prompt
from ..enrich import enrichment_rows, grid, search, search_split
from ..errors import PatchlabError
from ..io import write_table
from .base import Analysis, Float, Int, Merged, Options, ShardContext


class EnrichOptions(Options):
    split: Float = Field(0.5, gt=0, lt=1)
    coefficients: list[Float | Literal["mean"]] = Field(default_factory=lambda: [0.5, 1.0, "mean"], min_length=1)
    step: Int | None = Field(None, ge=1)


class Enrich(Analysis):
    name = "enrich"
    Options = EnrichOptions
    clips = ("enrich",)

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        if not ctx.samples:
            return {}
        opts, labels = ctx.exp.enrich, ctx.labels
        combos = grid(ctx.lalm.n_layers, opts.coefficients, opts.step)
        rows = []
        for s in ctx.samples:
            try:
                got = enrichment_rows(ctx.lalm, ctx.prepared(s, build_prompt(s, ctx.exp.prompt)), combos,
                                      labels.token_ids, labels.index(s.label))  # fmt: skip
            except PatchlabError as e:
                ctx.skip(s, e, "enrich")
                continue
            rows += [{"track": s.track, **r} for r in got]
        return {"enrich": pd.DataFrame(rows)}

    def merge(self, m: Merged) -> None:
        if "enrich" not in m.tables:
            return
        t, exp = m.tables["enrich"], m.exp
        write_table(m.out / "tables" / "enrichment.csv", t)
        for track, g in t.groupby("track", sort=False):
            choice = search(g, exp.enrich.split, exp.seed)
            m.track_summary(track)["enrichment"] = choice
            held_out = search_split(g, exp.enrich.split, exp.seed)[1]
            m.tested.append((track, V.enrichment_verdict(track, g, choice, held_out, exp.seed)))
