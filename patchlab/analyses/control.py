"""The no-audio control (the seed's open question 1: does the model answer what it cannot have heard?): each clip's
prompt kept and its audio replaced by silence or by noise of the clip's loudness; the answer, how sure the model is
of it, and the layer where it forms, against the same clips with their real audio."""

from __future__ import annotations

from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field

from .. import stats
from ..data import build_prompt, draw_key
from ..errors import PatchlabError
from ..io import write_table
from ..lens import lens_logits
from ..report import plots
from .base import Merged, Options, ShardContext
from .lens import LensReading, reader

REPLACEMENTS = ("silence", "noise")


class ControlOptions(Options):
    replace: list[Literal[REPLACEMENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(REPLACEMENTS), min_length=1
    )  # what the clip's audio is replaced by


def replaced(wave: np.ndarray, kind: str, sample: str, seed: int) -> np.ndarray:
    """The clip's waveform replaced: zeros, or Gaussian noise at the clip's RMS (seeded by the clip)."""
    if kind == "silence":
        return np.zeros_like(wave)
    key = draw_key(sample)
    rng = np.random.default_rng([seed, len(key), sum(map(ord, key))])
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) or 1e-3
    return (rng.standard_normal(len(wave)) * rms).astype(wave.dtype)


def answer_layer(p: np.ndarray) -> int:
    """The first layer from which the last layer's answer is the argmax at every later layer ((layers, |Y|) probs)."""
    top = p.argmax(-1)
    later = top == top[-1]
    return int(len(later) - np.argmin(later[::-1])) if not later.all() else 0


class Control(LensReading):
    name = "control"
    Options = ControlOptions

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """Per clip and condition (the real audio, each replacement) and layer: the final position's label-set
        probabilities through the logit lens, the answer (last layer) and the layer it forms at."""
        lalm, exp, labels = ctx.lalm, ctx.exp, ctx.labels
        rows, translators = [], reader(ctx)
        for s in ctx.samples:
            truth = labels.index(s.label)
            for condition in ("audio", *exp.control.replace):
                wave = ctx.waves[s.id]
                wave = wave if condition == "audio" else replaced(wave, condition, s.id, exp.seed)
                batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(s, exp.prompt), id=s.id, label=s.label)
                try:
                    logits = lens_logits(lalm, batch, labels.token_ids, translators)[:, 0, -1].double()
                except PatchlabError as e:
                    ctx.skip(s, e, f"control[{condition}]")
                    continue
                p = logits.softmax(-1).numpy()
                chosen = int(p[-1].argmax())
                formed = answer_layer(p)
                rows += [dict(track=s.track, sample=s.id, label=s.label, condition=condition, layer=la,
                              chosen=labels.labels[chosen], correct=chosen == truth, p_true=float(p[la, truth]),
                              p_answer=float(p[la, chosen]), answer_layer=formed) for la in range(len(p))]  # fmt: skip
        return {"control": pd.DataFrame(rows)}

    def merge(self, m: Merged) -> None:
        rows = m.table("control")
        if rows is None:
            return
        exp = m.exp
        write_table(m.out / "tables" / "control.csv", rows)
        for track, g in rows.groupby("track", sort=False):
            last = g[g.layer == g.layer.max()].set_index(["condition", "sample"])
            real = last.loc["audio"]
            prior = float(real["label"].value_counts(normalize=True).max())
            heard = real[real["correct"].astype(bool)]
            entry = {"prior": prior}
            for cond in ("audio", *exp.control.replace):
                mine = last.loc[cond]
                right = mine["correct"].astype(bool).to_numpy()
                lo, hi = stats.wilson(int(right.sum()), len(right))
                entry[cond] = {"accuracy": float(right.mean()), "accuracy_lo": lo, "accuracy_hi": hi, "n": len(right),
                               **stats.mean_interval("p_answer", mine["p_answer"], exp.seed),
                               **stats.mean_interval("answer_layer", mine["answer_layer"], exp.seed)}  # fmt: skip
                if cond != "audio":
                    m.tested += [(track, v) for v in _verdicts(track, cond, real, mine, heard, exp.seed)]
            m.track_summary(track)["control"] = entry
            curves = g.groupby(["condition", "layer"], sort=False)["p_answer"].mean().reset_index()
            write_table(m.out / "tables" / f"control_curves_{track}.csv", curves.assign(track=track))
            title = f"{track}: p(answer) by layer, real audio vs replaced, {g['sample'].nunique()} clips"
            m.plot(f"No-audio control: {track}", _curves(curves, m.out / "plots" / f"control_{track}.png", title))


def _verdicts(track: str, cond: str, real: pd.DataFrame, mine: pd.DataFrame, heard: pd.DataFrame,
              seed: int) -> list[stats.Verdict]:  # fmt: skip
    """Without audio: is the model less sure of its answer, does the answer form later? (Its accuracy against a
    constant guess is reported with its interval, not tested: at a few hundred clips no test can tell it within the
    smallest effect that matters, 0.05, in either direction.)"""
    unsure = stats.paired(
        f"{track}: the model is less sure of its answer with the audio replaced by {cond} (p of the answer, real "
        f"audio − {cond}, paired by clip)", real["p_answer"], mine["p_answer"].reindex(real.index),
        seed=seed)  # fmt: skip
    later = stats.paired(
        f"{track}: an answer without audio ({cond}) forms at a later layer than a right answer on the real audio "
        "(answer layer, paired by clip)", mine["answer_layer"].reindex(heard.index).astype(float),
        heard["answer_layer"].astype(float), seed=seed)  # fmt: skip
    return [unsure.matters(stats.MIN_EFFECT["p_true"]), later.matters(stats.MIN_EFFECT["layers"])]


def _curves(curves: pd.DataFrame, path, title: str):
    fig, ax = plt.subplots(figsize=(6, 4))
    for cond, g in curves.groupby("condition", sort=False):
        ax.plot(g["layer"], g["p_answer"], marker=".", label=cond)
    ax.set_xlabel("layer")
    ax.set_ylabel("p of the final answer (logit lens, label set)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return plots.save(fig, path)
