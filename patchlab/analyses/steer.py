"""Steering: a direction from the data added to the residual stream at the final position, alpha times, at chosen
layers, and the answer's change.

The direction is a mean difference of two conditions of the final position's `resid_pre` at each layer:
`audio_silence` (the listening papers': the clip minus the same prompt with the clip replaced by silence; steered
clips as they are), `label` (the clips of one label minus those of the others; each steered clip toward its own
label) or `cue` (the prompt alone minus the prompt with a conflicting text cue; steered clips under their conflicting
cue, toward the audio). It is taken from a seeded share of the clips (the first phase records them) and tested on the
others (a second phase steers them): every (layer, alpha) of a clip in one batch (patchlab.steering).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .. import stats
from ..corrupt import make_pair
from ..data import Sample, build_prompt
from ..errors import PatchlabError
from ..io import write_table
from ..metrics import final_metrics, wide
from ..models.base import Prompt
from ..record import clean_run, record
from ..report import plots
from ..screen import verified
from ..steering import Addition, steered_logits
from .base import Analysis, Float, Int, Merged, Options, ShardContext, checked_layers
from .cue import conflicting, cue_prompt

DIRECTIONS = ("audio_silence", "label", "cue")


class SteerOptions(Options):
    direction: Literal[DIRECTIONS] = "audio_silence"  # type: ignore[valid-type]  # the two conditions it contrasts
    layers: list[Int] | None = Field(None, min_length=1)  # where it is added (resid_pre, final position; default all)
    alphas: list[Float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    split: Float = Field(0.5, gt=0, lt=1)  # the share of clips the direction is taken from
    max_batch: Int = Field(64, ge=1)


_WHAT = {
    "audio_silence": "the audio − silence direction",
    "label": "its own label's direction (that label − the others)",
    "cue": "the no-cue − conflicting-cue direction, under a conflicting cue,",
}


def _vector_columns(t: pd.DataFrame) -> list[str]:
    return [c for c in t.columns if c.startswith("v")]


def direction(rows: pd.DataFrame, kind: str) -> dict:
    """Per layer (per (layer, label) for `label`): the mean over the direction clips of their recorded difference,
    or, for `label`, the mean state of that label's clips minus the mean of the other labels' clips."""
    cols = _vector_columns(rows)
    if kind != "label":
        return {int(la): torch.tensor(g[cols].to_numpy(np.float64).mean(0)) for la, g in rows.groupby("layer")}
    out = {}
    for la, g in rows.groupby("layer"):
        for label in g["label"].unique():
            mine, rest = (g[pick][cols].to_numpy(np.float64) for pick in (g.label == label, g.label != label))
            if len(rest):
                out[int(la), label] = torch.tensor(mine.mean(0) - rest.mean(0))
    return out


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

    def _prompts(self, ctx: ShardContext, s: Sample) -> tuple[Prompt, Prompt | None]:
        """The clip's prompt as it is steered, and (for `cue`) the prompt it is steered away from."""
        exp = ctx.exp
        if exp.steer.direction != "cue":
            return build_prompt(s, exp.prompt), None
        return build_prompt(s, exp.prompt), cue_prompt(s, exp.prompt, conflicting(s, ctx.track_labels, exp.seed))

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """The direction clips' difference of conditions (their own state for `label`) at the final position of each
        steered layer."""
        lalm, exp, kind = ctx.lalm, ctx.exp, ctx.exp.steer.direction
        layers = checked_layers(lalm, exp.steer.layers, "steer.layers") or range(lalm.n_layers)
        rows = []
        for s in ctx.samples:
            if not self._direction_clip(exp, s.id):
                continue
            try:
                if kind == "audio_silence":
                    pair = make_pair(lalm, s, "silence", exp.prompt, ctx.labels.index(s.label), ctx.pool, exp.seed)
                    a, b = pair.clean, pair.corrupt
                else:
                    plain, cued = self._prompts(ctx, s)
                    a = ctx.prepared(s, plain)
                    b = ctx.prepared(s, cued) if cued is not None else None
            except PatchlabError as e:
                ctx.skip(s, e, "steer")
                continue
            first = record(lalm, a, ["resid_pre"], layers, positions=[a.length - 1])
            other = record(lalm, b, ["resid_pre"], layers, positions=[b.length - 1]) if b is not None else None
            for la in layers:
                d = wide(first[("resid_pre", la)])
                d = d - wide(other[("resid_pre", la)]) if other is not None else d
                tag = {"label": s.label} if kind == "label" else {}
                rows.append({"track": s.track, "sample": s.id, **tag, "layer": la,
                             **{f"v{i}": x for i, x in enumerate(d.reshape(-1).tolist())}})  # fmt: skip
        return {"steer_direction": pd.DataFrame(rows)}

    def plan_second(self, exp, track: str, first: Callable[[str], pd.DataFrame]) -> dict[str, tuple[str, ...]]:
        """Every clip of the track the direction was not taken from, once the first phase recorded a direction."""
        if "steer" not in exp.analyses or first("steer_direction").empty:
            return {}
        return {s.id: ("steer",) for s in exp.samples(track) if not self._direction_clip(exp, s.id)}

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """Each held-out clip steered at every (layer, alpha), against its unsteered run (under its conflicting cue
        for `cue`)."""
        lalm, exp, labels, kind = ctx.lalm, ctx.exp, ctx.labels, ctx.exp.steer.direction
        vectors = direction(ctx.first("steer_direction"), kind)
        layers = sorted({k[0] if isinstance(k, tuple) else k for k in vectors})
        settings = [(la, a) for la in layers for a in exp.steer.alphas]
        rows = []
        for s in ctx.samples:  # a second-phase shard holds the clips of its payload alone
            plain, cued = self._prompts(ctx, s)
            batch = ctx.prepared(s, cued or plain)
            truth = labels.index(s.label)
            mine = {la: vectors.get((la, s.label)) if kind == "label" else vectors[la] for la in layers}
            if any(v is None for v in mine.values()):
                ctx.skip(s, PatchlabError(f"no direction clips of label {s.label!r}", "give more clips"), "steer")
                continue
            run = clean_run(lalm, batch)
            clean_logits = run.cache.final_logits.to(lalm.device)
            base = final_metrics(clean_logits, labels.token_ids, truth, clean_logits)
            for i in range(0, len(settings), exp.steer.max_batch):
                chunk = settings[i : i + exp.steer.max_batch]
                logits = steered_logits(lalm, batch, [Addition(la, a, mine[la]) for la, a in chunk])
                met = final_metrics(logits, labels.token_ids, truth, clean_logits)
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
                    f"{track}: adding {a:g} × {_WHAT[exp.steer.direction]} (from {n_direction} other clips) at layer "
                    f"{la}, final position, raises the answer's logit difference on held-out clips"
                )
                test = stats.paired(hypothesis, h["logit_diff"], h["base_logit_diff"], seed=exp.seed)
                m.tested.append((track, test.matters(stats.MIN_EFFECT["logit"])))
            curves = pd.DataFrame(curves)
            write_table(m.out / "tables" / f"steering_{track}.csv", curves)
            records = curves.drop(columns="track").to_dict(orient="records")
            m.track_summary(track)["steering"] = {"direction_clips": n_direction, "curves": records}
            title = f"{track}: steering with {_WHAT[exp.steer.direction]}, {g['sample'].nunique()} held-out clips"
            m.plot(f"Steering: {track}", steer_curve(curves, m.out / "plots" / f"steering_{track}.png", title))
