"""Attention knockout: a query region's attention to a key region blocked from each chosen layer to the top, and
the answer's change (where the final position reads the audio)."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from .. import findings as F
from ..data import build_prompt
from ..errors import PatchlabError
from ..io import write_table
from ..patching.knockout import KnockoutSpec, knockout, window_specs
from ..report import plots
from ..vocabulary import REGION_NAMES
from .base import Analysis, Int, Merged, Options, ShardContext, checked_layers


class KnockoutOptions(Options):
    pairs: list[tuple[Literal[REGION_NAMES], Literal[REGION_NAMES]]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [("final", "audio"), ("text", "audio"), ("final", "text")], min_length=1
    )  # (query, key) regions: block query -> key attention
    layers: list[Int] | None = Field(None, min_length=1)  # block from each of these layers to the top (default: all)
    max_batch: Int = Field(64, ge=1)


def clip_knockouts(ctx: ShardContext, specs: list[KnockoutSpec], max_batch: int, analysis: str) -> pd.DataFrame:
    """Every knockout of `specs` on each clean clip of the shard (a clip whose run fails becomes a skipped row)."""
    labels, tables = ctx.labels, []
    for s in ctx.samples:
        try:
            t = knockout(ctx.lalm, [ctx.prepared(s, build_prompt(s, ctx.exp.prompt))], specs, labels.token_ids,
                         [labels.index(s.label)], max_batch=max_batch, progress=False)  # fmt: skip
        except PatchlabError as e:
            ctx.skip(s, e, analysis)
            continue
        t.insert(0, "track", s.track)
        tables.append(t)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


class Knockout(Analysis):
    name = "knockout"
    Options = KnockoutOptions

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """Each clean clip with every (query -> key) knockout window."""
        if not ctx.samples:
            return {}
        opts = ctx.exp.knockout
        layers = checked_layers(ctx.lalm, opts.layers, "knockout.layers")
        specs = window_specs(ctx.lalm.n_layers, [tuple(p) for p in opts.pairs], layers)
        return {"knockout": clip_knockouts(ctx, specs, opts.max_batch, "knockout")}

    def merge(self, m: Merged) -> None:
        knock = m.table("knockout")
        if knock is None:
            return
        write_table(m.out / "tables" / "knockout.csv", knock)
        for track, g in knock.groupby("track", sort=False):
            curves = F.knockout_curves(g, m.exp.seed)
            curves.insert(0, "track", track)
            write_table(m.out / "tables" / f"knockout_curves_{track}.csv", curves)
            m.track_summary(track)["knockout"] = curves.to_dict(orient="records")
            path = plots.knockout_curves(curves, m.out / "plots" / f"knockout_{track}.png",
                                         f"{track}: attention knockout over {g['sample'].nunique()} clips")  # fmt: skip
            m.plot(f"Attention knockout: {track}", path)
