"""Steering toward the audio: a direction added to the residual stream at the final position, alpha times, at chosen
layers, and the answer's change.

The direction is the listening papers' audio-minus-silence difference: at each layer, the mean over clips of the
final position's `resid_pre` on the clip minus on the same prompt with the clip replaced by silence. It is taken
from a seeded share of the clips (the first phase records them) and tested on the others (a second phase steers
them): every (layer, alpha) of a clip in one batch, resumed at the lowest steered layer on the final position alone.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .. import stats
from ..corrupt import make_pair
from ..data import build_prompt
from ..errors import PatchlabError
from ..hooks import PrefixKV, hooked, run_from_layer, suffix_kwargs
from ..io import write_table
from ..metrics import final_metrics, wide
from ..models.base import Batch, HookedLALM
from ..record import clean_run, record
from ..report import plots
from ..screen import verified
from .base import Analysis, Float, Int, Merged, Options, ShardContext, checked_layers


class SteerOptions(Options):
    layers: list[Int] | None = Field(None, min_length=1)  # where it is added (resid_pre, final position; default all)
    alphas: list[Float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    split: Float = Field(0.5, gt=0, lt=1)  # the share of clips the direction is taken from
    max_batch: Int = Field(64, ge=1)


def _vector_columns(t: pd.DataFrame) -> list[str]:
    return [c for c in t.columns if c.startswith("v")]


def direction(rows: pd.DataFrame) -> dict[int, torch.Tensor]:
    """Per layer: the mean over the direction clips of (clip - silence) at the final position."""
    cols = _vector_columns(rows)
    return {int(la): torch.tensor(g[cols].to_numpy(np.float64).mean(0)) for la, g in rows.groupby("layer")}


def steered_logits(lalm: HookedLALM, batch: Batch, settings: list[tuple[int, float]],
                   vectors: dict[int, torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """Final-position logits (len(settings), vocab): row r with alpha_r * v[layer_r] added to `resid_pre` at
    layer_r, final position; all rows resumed together at the lowest layer, on the final position alone."""
    run = clean_run(lalm, batch)
    n, length = len(settings), batch.regions[0].length
    start = min(la for la, _ in settings)
    edits = {}
    for la in sorted({la for la, _ in settings}):
        coef = torch.tensor([a if layer == la else 0.0 for layer, a in settings], dtype=lalm.dtype, device=lalm.device)
        v = vectors[la].to(lalm.device, lalm.dtype)

        def add(x: torch.Tensor, coef=coef, v=v) -> torch.Tensor:
            x = x.clone()
            x[:, -1] += coef[:, None] * v[None, :]  # the final position of each row
            return x

        edits[("resid_pre", la)] = add
    p0 = length - 1
    prefix, kwargs = PrefixKV(run.keys, run.values, p0), suffix_kwargs(run.layer_kwargs, p0, length, lalm.dtype)
    h0 = run.cache[("resid_pre", start)][:, p0:].expand(n, -1, -1).contiguous()
    with torch.no_grad(), hooked(lalm, edits=edits):
        return wide(lalm.unembed(run_from_layer(lalm, h0, start, kwargs, prefix)[:, -1]))


def steer_curve(curves: pd.DataFrame, path, title: str):
    """The answer's logit-difference change against alpha, one line per layer, with 95% intervals."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for layer, g in curves.groupby("layer"):
        g = g.sort_values("alpha")
        ax.plot(g["alpha"], g["logit_diff_change"], marker="o", label=f"layer {layer}")
        ax.fill_between(g["alpha"], g["logit_diff_change_lo"], g["logit_diff_change_hi"], alpha=0.2)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("alpha (times the audio − silence direction)")
    ax.set_ylabel("Δ logit difference (held-out clips)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return plots.save(fig, path)


class Steer(Analysis):
    name = "steer"
    Options = SteerOptions
    second_phase = "steer"

    def _direction_clip(self, exp, sample: str) -> bool:
        return verified(sample, exp.steer.split, exp.seed)  # a seeded hash: the same clips whatever the sharding

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """The direction clips' (clip - silence) difference at the final position of each steered layer."""
        lalm, exp = ctx.lalm, ctx.exp
        layers = checked_layers(lalm, exp.steer.layers, "steer.layers") or range(lalm.n_layers)
        rows = []
        for s in ctx.samples:
            if not self._direction_clip(exp, s.id):
                continue
            try:
                pair = make_pair(lalm, s, "silence", exp.prompt, ctx.labels.index(s.label), ctx.pool, exp.seed)
            except PatchlabError as e:
                ctx.skip(s, e, "steer")
                continue
            clean = record(lalm, pair.clean, ["resid_pre"], layers, positions=[pair.clean.length - 1])
            quiet = record(lalm, pair.corrupt, ["resid_pre"], layers, positions=[pair.corrupt.length - 1])
            for la in layers:
                d = (wide(clean[("resid_pre", la)]) - wide(quiet[("resid_pre", la)])).reshape(-1).tolist()
                rows.append({"track": s.track, "sample": s.id, "layer": la, **{f"v{i}": x for i, x in enumerate(d)}})
        return {"steer_direction": pd.DataFrame(rows)}

    def plan_second(self, exp, track: str, first: Callable[[str], pd.DataFrame]) -> dict[str, tuple[str, ...]]:
        """Every clip of the track the direction was not taken from, once the first phase recorded a direction."""
        if "steer" not in exp.analyses or first("steer_direction").empty:
            return {}
        return {s.id: ("steer",) for s in exp.samples(track) if not self._direction_clip(exp, s.id)}

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """Each held-out clip steered at every (layer, alpha), against its unsteered run."""
        lalm, exp, labels = ctx.lalm, ctx.exp, ctx.labels
        vectors = direction(ctx.first("steer_direction"))
        settings = [(la, a) for la in sorted(vectors) for a in exp.steer.alphas]
        rows = []
        for s in ctx.samples:  # a second-phase shard holds the clips of its payload alone
            batch = ctx.prepared(s, build_prompt(s, exp.prompt))
            truth = labels.index(s.label)
            run = clean_run(lalm, batch)
            clean_logits = run.cache.final_logits.to(lalm.device)
            base = final_metrics(clean_logits, labels.token_ids, truth, clean_logits)
            for i in range(0, len(settings), exp.steer.max_batch):
                chunk = settings[i : i + exp.steer.max_batch]
                met = final_metrics(steered_logits(lalm, batch, chunk, vectors), labels.token_ids, truth, clean_logits)
                for r, (la, a) in enumerate(chunk):
                    rows.append(dict(track=s.track, sample=s.id, label=s.label, layer=la, alpha=a,
                                     logit_diff=float(met["logit_diff"][r]), acc=float(met["acc"][r]),
                                     base_logit_diff=float(base["logit_diff"][0]),
                                     base_acc=float(base["acc"][0])))  # fmt: skip
        return {"steer": pd.DataFrame(rows)}

    def merge(self, m: Merged) -> None:
        rows = m.table("steer")
        if rows is None:
            return
        exp = m.exp
        write_table(m.out / "tables" / "steering.csv", rows)
        for track, g in rows.groupby("track", sort=False):
            n_direction = int(m.tables["steer_direction"].query("track == @track")["sample"].nunique())
            curves = []
            for (la, a), h in g.groupby(["layer", "alpha"], sort=True):
                change = h["logit_diff"] - h["base_logit_diff"]
                curves.append({"track": track, "layer": int(la), "alpha": float(a), "n": int(len(h)),
                               **stats.mean_interval("logit_diff_change", change, exp.seed),
                               **stats.mean_interval("acc_change", h["acc"] - h["base_acc"], exp.seed)})  # fmt: skip
                hypothesis = (
                    f"{track}: adding {a:g} × the audio − silence direction (from {n_direction} other clips) at layer "
                    f"{la}, final position, raises the answer's logit difference on held-out clips"
                )
                test = stats.paired(hypothesis, h["logit_diff"], h["base_logit_diff"], seed=exp.seed)
                m.tested.append((track, test.matters(stats.MIN_EFFECT["logit"])))
            curves = pd.DataFrame(curves)
            write_table(m.out / "tables" / f"steering_{track}.csv", curves)
            records = curves.drop(columns="track").to_dict(orient="records")
            m.track_summary(track)["steering"] = {"direction_clips": n_direction, "curves": records}
            title = f"{track}: steering toward the audio, {g['sample'].nunique()} held-out clips"
            m.plot(f"Steering: {track}", steer_curve(curves, m.out / "plots" / f"steering_{track}.png", title))
