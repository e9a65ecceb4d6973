"""Listening heads: every attention head's reading of the audio, one head knocked out at one layer at a time (the
final position's attention to the audio blocked in that head alone), beside the whole layer knocked out.

The top k heads are chosen on a seeded share of the clips and tested on the rest: each chosen head lowers the
answer's logit difference there, and together they carry at least half of what blocking their whole layers does
(the audio effect the heads share). All (layer, head) knockouts of a clip run in batches through the knockout
engine, each resumed at its own layer on the final position alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from .. import stats
from ..data import build_prompt
from ..enrich import search_split
from ..io import write_table
from ..patching.attribution import head_attribution
from ..patching.knockout import KnockoutSpec
from ..report import plots
from ..vocabulary import REGION_NAMES
from .base import Analysis, Float, Int, Merged, Options, ShardContext, checked_layers
from .knockout import clip_knockouts

HALF = 0.5  # the share of the whole layers' effect the top heads must carry together


class HeadsOptions(Options):
    query: Literal[REGION_NAMES] = "final"  # type: ignore[valid-type]
    key: Literal[REGION_NAMES] = "audio"  # type: ignore[valid-type]
    layers: list[Int] | None = Field(None, min_length=1)  # the layers whose heads are knocked out (default: all)
    top_k: Int = Field(3, ge=1)
    split: Float = Field(0.5, gt=0, lt=1)  # the share of clips the top heads are chosen on
    max_batch: Int = Field(64, ge=1)
    verify_top: Int | None = Field(None, ge=1)  # screen every head by AtP, knock out only the top N exactly

    @model_validator(mode="after")
    def _enough(self) -> HeadsOptions:
        if self.verify_top is not None and self.verify_top < self.top_k:
            raise ValueError(f"verify_top ({self.verify_top}) must be at least top_k ({self.top_k})")
        return self


def _drops(rows: pd.DataFrame) -> pd.DataFrame:
    """Clip x unit table of the answer's drop (clean - knocked-out logit difference); a unit is "L.h" for one head,
    "L" for the whole layer."""
    head = rows["heads"].map(lambda h: "" if pd.isna(h) else f".{int(float(h))}")  # read back as numbers
    unit = rows["start"].astype(int).astype(str) + head
    return rows.assign(unit=unit, drop=-rows["logit_diff_change"]).pivot_table(
        index="sample", columns="unit", values="drop", aggfunc="first"
    )


def _by_unit(per_head: pd.DataFrame) -> pd.Series:
    """A (layer, head, drop) table's drops indexed by unit ("L.h")."""
    return per_head.set_index(per_head["layer"].astype(str) + "." + per_head["head"].astype(str))["drop"]


def head_map(per_head: pd.DataFrame, top: list[str], path, title: str):
    """Layer x head map of the mean drop in the answer's logit difference, the chosen heads outlined."""
    m = per_head.pivot_table(index="layer", columns="head", values="drop")
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * m.shape[1] + 2), max(3.5, 0.22 * m.shape[0] + 1.5)))
    lim = max(1e-9, float(np.nanmax(np.abs(m.to_numpy()))))
    im = ax.imshow(m.to_numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(m.shape[1]), m.columns)
    ax.set_yticks(range(m.shape[0]), m.index)
    rows, cols = list(m.index), list(m.columns)
    for unit in top:
        layer, head = map(int, unit.split("."))
        ax.add_patch(plt.Rectangle((cols.index(head) - 0.5, rows.index(layer) - 0.5), 1, 1, fill=False, lw=2))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="drop in the answer's logit difference")
    ax.set_title(f"{title}\n(outlined: the top heads, chosen on the selection clips)", fontsize=10)
    return plots.save(fig, path)


def _units(atp: pd.DataFrame, top: int, split: float, seed: int) -> list[str]:
    """The `top` heads by mean AtP drop over the selection clips (the clips the top k are later chosen on)."""
    chosen, _ = search_split(atp, split, seed)
    mean = atp[atp["sample"].isin(chosen)].groupby(["layer", "head"])["atp"].mean()
    return [f"{la}.{h}" for la, h in (-mean).sort_values(ascending=False).index[:top]]


class Heads(Analysis):
    name = "heads"
    Options = HeadsOptions
    second_phase = "heads"

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """Each clip with every whole-layer knockout at a single layer and every (layer, head) knockout, or, with
        `verify_top`, every head's AtP estimate (its exact knockouts come in the second phase)."""
        if not ctx.samples:
            return {}
        opts, lalm = ctx.exp.heads, ctx.lalm
        layers = checked_layers(lalm, opts.layers, "heads.layers") or list(range(lalm.n_layers))
        q, k = opts.query, opts.key
        specs = [KnockoutSpec(la, la + 1, q, k) for la in layers]
        if opts.verify_top is None:
            specs = [KnockoutSpec(la, la + 1, q, k, (h,)) for la in layers for h in range(lalm.n_heads)] + specs
            return {"heads": clip_knockouts(ctx, specs, opts.max_batch, "heads")}
        rows = []
        for s in ctx.samples:
            batch = ctx.prepared(s, build_prompt(s, ctx.exp.prompt))
            est = head_attribution(lalm, batch, layers, q, k, ctx.labels.token_ids, ctx.labels.index(s.label))
            rows += [dict(track=s.track, sample=s.id, layer=la, head=h, atp=float(est[i, h]))
                     for i, la in enumerate(layers) for h in range(lalm.n_heads)]  # fmt: skip
        return {"heads": clip_knockouts(ctx, specs, opts.max_batch, "heads"), "heads_atp": pd.DataFrame(rows)}

    def plan_second(self, exp, track: str, first: Callable[[str], pd.DataFrame]) -> dict[str, tuple[str, ...]]:
        """With `verify_top`: the top heads by AtP (on the selection clips), knocked out exactly on every clip."""
        if "heads" not in exp.analyses or exp.heads.verify_top is None or (atp := first("heads_atp")).empty:
            return {}
        units = tuple(_units(atp, exp.heads.verify_top, exp.heads.split, exp.seed))
        return {str(c): units for c in atp["sample"].unique()}

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """The verified heads of each clip knocked out exactly, one at a time."""
        opts = ctx.exp.heads
        units = [tuple(map(int, u.split("."))) for u in next(iter(payload.values())).split("+")]
        specs = [KnockoutSpec(la, la + 1, opts.query, opts.key, (h,)) for la, h in units]
        return {"heads": clip_knockouts(ctx, specs, opts.max_batch, "heads")}

    def merge(self, m: Merged) -> None:
        rows = m.table("heads")
        if rows is None:
            return
        exp, opts = m.exp, m.exp.heads
        write_table(m.out / "tables" / "heads.csv", rows)
        for track, g in rows.groupby("track", sort=False):
            drops = _drops(g)
            chosen, held_out = search_split(g, opts.split, exp.seed)
            select, test = drops.loc[sorted(chosen)], drops.loc[held_out]
            units = [u for u in drops.columns if "." in u]
            ranked = sorted(units, key=lambda u: -select[u].mean())
            top = ranked[: opts.top_k]
            per_head = []
            for u in units:
                layer, head = map(int, u.split("."))
                d = stats.mean_interval("drop", drops[u], exp.seed)
                n = int(drops[u].notna().sum())
                per_head.append(dict(track=track, layer=layer, head=head, drop=d["drop"], lo=d["drop_lo"],
                                     hi=d["drop_hi"], n=n, rank=ranked.index(u) + 1))  # fmt: skip
            per_head = pd.DataFrame(per_head).sort_values(["layer", "head"], ignore_index=True)
            write_table(m.out / "tables" / f"heads_{track}.csv", per_head)
            for u in top:
                m.tested.append((track, stats.paired(
                    f"{track}: head {u} (chosen on {len(select)} clips) reads the {opts.key} for the {opts.query} "
                    "position: knocking it out lowers the answer's logit difference on held-out clips",
                    test[u], seed=exp.seed).matters(stats.MIN_EFFECT["logit"])))  # fmt: skip
            layers = sorted({u.split(".")[0] for u in top})
            carried, whole = test[top].sum(axis=1), test[layers].sum(axis=1)
            m.tested.append((track, stats.paired(
                f"{track}: the top {len(top)} heads carry at least half of what knocking out their whole layers does "
                f"(held-out clips; top heads' drop − {HALF:g} × the layers' drop > 0)",
                carried, HALF * whole, seed=exp.seed).matters(stats.MIN_EFFECT["logit"])))  # fmt: skip
            top_drop = stats.mean_interval("top_drop", carried, exp.seed)
            layers_drop = stats.mean_interval("layers_drop", whole, exp.seed)
            m.track_summary(track)["heads"] = {
                "top": top,
                "selection_clips": len(select),
                "held_out_clips": int(carried.notna().sum()),
                "top_drop_held_out": top_drop.pop("top_drop"),
                **top_drop,
                "layers_drop_held_out": layers_drop.pop("layers_drop"),
                **layers_drop,
            }
            title = f"{track}: {opts.query} → {opts.key} knocked out per head, {drops.shape[0]} clips"
            shown = per_head
            if (atp := m.table("heads_atp")) is not None:  # screened: every head's AtP estimate, the top verified
                est = atp[atp.track == track].assign(drop=lambda d: -d["atp"]).groupby(["layer", "head"])["drop"]
                shown = est.mean().reset_index()
                m.tested.append((track, stats.rank_correlation(
                    f"{track}: attribution patching ranks the {len(units)} heads it screened in as their exact "
                    "knockouts do (mean drop per head, AtP estimate vs exact)",
                    _by_unit(shown)[units], _by_unit(per_head)[units], seed=exp.seed,
                ).matters(stats.MIN_EFFECT["correlation"])))  # fmt: skip
                m.track_summary(track)["heads"].update(screened=len(shown), verified=len(units))
                title = f"{track}: AtP estimate of each head's knockout, {opts.query} → {opts.key}, {len(drops)} clips"
            path = head_map(shown, top, m.out / "plots" / f"heads_{track}.png", title)
            m.plot(f"Listening heads: {track}", path)
