"""The tuned lens beside the logit lens on the same clips: at the final position of every layer, how far each lens'
read-out is from the model's own final distribution (KL over the whole vocabulary), the label-set information score,
and each clip's critical layer under each lens. Tested: the tuned lens reads the final distribution more closely at
chosen layers, and it resolves the attribute at an earlier layer (paired by clip); AudioLens' RQ1-RQ3 under each
lens, side by side (the model's own answer is the same under both: the last layer reads the model's logits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .. import findings as F
from .. import stats
from ..data import build_prompt, load_track
from ..errors import PatchlabError
from ..io import write_table
from ..lens import check_finite_logits, critical_layer
from ..report import plots
from ..tuned import kl_per_layer, states, translators_for
from .base import Analysis, Float, Int, Merged, Options, ShardContext, checked_layers
from .lens import check_tuned, tuned_inputs

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this package's registry
    from ..experiment import Experiment

LENSES = ("logit", "tuned")


class TunedOptions(Options):
    layers: list[Int] | None = Field(None, min_length=1)  # where closeness is tested (default: a quarter, half, 3/4)
    min_kl: Float = Field(0.1, ge=0)  # the smallest KL difference (nats) that matters


def clip_rows(ctx: ShardContext) -> list[dict]:
    """Per clip, layer and lens at the final position: KL from the final distribution, p(true), correctness."""
    lalm, exp, labels = ctx.lalm, ctx.exp, ctx.labels
    translators = translators_for(lalm, exp.model, exp.lens.translators)
    ids = torch.tensor(labels.token_ids, device=lalm.device)
    rows = []
    for s in ctx.samples:
        batch = ctx.prepared(s, build_prompt(s, exp.prompt))
        h = states(lalm, batch, [batch.tensors["input_ids"].shape[1] - 1])  # (1, layers, d)
        truth = labels.index(s.label)
        for lens, tr in zip(LENSES, (None, translators)):
            kl = kl_per_layer(lalm, h, tr)[0].double()
            with torch.no_grad():
                read = [lalm.unembed(h[0, la].to(lalm.device) if tr is None else tr(h[0, la].to(lalm.device), la), ids)
                        for la in range(lalm.n_layers)]  # fmt: skip
            logits = torch.stack(read).double().cpu()
            try:
                check_finite_logits(logits, s.id, lalm.dtype)
            except PatchlabError as e:
                ctx.skip(s, e, f"tuned[{lens}]")
                break
            p = logits.softmax(-1)
            rows += [dict(track=s.track, sample=s.id, label=s.label, lens=lens, layer=la, kl=float(kl[la]),
                          p_true=float(p[la, truth]), correct=bool(p[la].argmax() == truth))
                     for la in range(lalm.n_layers)]  # fmt: skip
    return rows


class Tuned(Analysis):
    name = "tuned"
    Options = TunedOptions
    clips = ("tuned",)

    def check(self, exp: Experiment) -> None:
        check_tuned(exp)

    def inputs(self, exp: Experiment) -> dict[str, str]:
        return tuned_inputs(exp)

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        checked_layers(ctx.lalm, ctx.exp.tuned.layers, "tuned.layers")
        return {"tuned": pd.DataFrame(clip_rows(ctx))} if ctx.samples else {}

    def merge(self, m: Merged) -> None:
        rows = m.table("tuned")
        if rows is None:
            return
        exp, opts = m.exp, m.exp.tuned
        write_table(m.out / "tables" / "tuned_lens.csv", rows)
        n_layers = int(rows["layer"].max()) + 1
        layers = opts.layers or sorted({n_layers // 4, n_layers // 2, 3 * n_layers // 4})
        for track, g in rows.groupby("track", sort=False):
            n_labels = m.label_counts.get(track) or len({s.label for s in load_track(exp.root(track), track)})
            kl = g.pivot_table(index="sample", columns=["lens", "layer"], values="kl")
            curves, entry = [], {}
            for lens in LENSES:
                mine = g[g.lens == lens]
                score = mine.groupby("layer")["correct"].mean()
                balanced = mine.groupby(["label", "layer"])["correct"].mean().groupby("layer").mean()
                p = mine.pivot_table(index="sample", columns="layer", values="p_true")
                alpha, weight = exp.lens.alpha, exp.lens.weight
                per_clip = pd.Series([critical_layer(r, n_labels, alpha, weight) for r in p.to_numpy()], index=p.index)
                right = mine[mine.layer == n_layers - 1]["correct"]
                lo, hi = stats.wilson(int(right.sum()), len(right))
                entry[lens] = {
                    "accuracy_last_layer": float(right.mean()),
                    "accuracy_lo": lo,
                    "accuracy_hi": hi,
                    **stats.mean_interval("clip_critical_layer", per_clip, exp.seed),
                    "clips_never_above_chance": int(per_clip.isna().sum()),
                }
                entry[lens]["per_clip"] = per_clip
                for la in range(n_layers):
                    ci = stats.mean_interval("kl", kl[(lens, la)], exp.seed)
                    curves.append(dict(track=track, lens=lens, layer=la, **ci, information_score=float(score[la]),
                                       balanced_score=float(balanced[la])))  # fmt: skip
            for la in layers:
                m.tested.append((track, stats.paired(
                    f"{track}: at layer {la} the tuned lens reads the model's final distribution more closely than the "
                    "logit lens (KL over the vocabulary at the final position, logit − tuned, paired by clip)",
                    kl[("logit", la)], kl[("tuned", la)], seed=exp.seed).matters(opts.min_kl)))  # fmt: skip
            m.tested.append((track, stats.paired(
                f"{track}: the tuned lens resolves the attribute at an earlier layer than the logit lens (each clip's "
                "critical layer of its p(true) curve, logit − tuned, paired by clip)",
                entry["logit"].pop("per_clip"), entry["tuned"].pop("per_clip"),
                seed=exp.seed).matters(stats.MIN_EFFECT["layers"])))  # fmt: skip
            shift, balanced = critical_shift(track, g, n_labels, exp.lens.alpha, exp.lens.weight, exp.seed)
            m.tested.append((track, shift))
            for lens, (est, lo, hi) in balanced.items():
                entry[lens].update(balanced_critical_layer=est, balanced_critical_layer_lo=lo,
                                   balanced_critical_layer_hi=hi)  # fmt: skip
            for lens in LENSES:  # AudioLens' RQ1-RQ3 on the same clips read through each lens
                cell = f"{track} [{exp.prompt}, {lens} lens]"
                per = g[g.lens == lens].assign(position="final", correct=lambda d: d["correct"].astype(float))
                m.tested += [(track, v) for v in F.rq1(cell, per, exp.seed) + F.rq2(cell, per, exp.seed)]
                m.tested.append((track, F.rq3_clips(cell, per, n_labels, exp.lens.alpha, exp.lens.weight, exp.seed)))
            curves = pd.DataFrame(curves)
            write_table(m.out / "tables" / f"tuned_lens_{track}.csv", curves)
            entry["kl_layers_tested"] = layers
            entry["n_clips"] = int(g["sample"].nunique())
            entry["curves"] = curves.drop(columns="track").to_dict(orient="records")
            m.track_summary(track)["tuned"] = entry
            title = f"{track}: logit lens vs tuned lens at the final position, {entry['n_clips']} clips"
            m.plot(f"Tuned lens: {track}", _plot(curves, m.out / "plots" / f"tuned_lens_{track}.png", title))


def _balanced_curve(correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The label-balanced information score per layer: the mean over labels of each label's mean correctness."""
    return np.mean([correct[labels == la].mean(0) for la in np.unique(labels)], axis=0)


def _basic(est: float, boot: np.ndarray) -> tuple[float, float]:
    """The basic bootstrap 95% interval, widened to hold the estimate."""
    q_lo, q_hi = np.quantile(boot, [0.025, 0.975])
    return float(min(est, 2 * est - q_hi)), float(max(est, 2 * est - q_lo))


def critical_shift(
    track: str, g: pd.DataFrame, n_labels: int, alpha: float, weight: str, seed: int, n_boot: int = 2000
) -> tuple[stats.Verdict, dict[str, tuple[float, float, float]]]:
    """The critical layer of the label-balanced information score (AudioLens' definition, immune to the label mix)
    under each lens, with its interval, and their difference (logit minus tuned) tested over the same clips: basic
    bootstrap intervals over clips (the critical layer of a mean curve is biased at small n, as
    `verdicts.critical_layer_ci` says), the one-sided p from the resamples."""
    curves = {lens: g[g.lens == lens].pivot_table(index="sample", columns="layer", values="correct") for lens in LENSES}
    clips = curves["logit"].index.intersection(curves["tuned"].index)
    labels = g.drop_duplicates("sample").set_index("sample")["label"].reindex(clips).to_numpy()
    c = {lens: curves[lens].loc[clips].to_numpy(float) for lens in LENSES}

    def crit(rows: np.ndarray) -> np.ndarray:
        return np.array([critical_layer(_balanced_curve(c[lens][rows], labels[rows]), n_labels, alpha, weight)
                         for lens in LENSES])  # fmt: skip

    est = crit(np.arange(len(clips)))
    rng = np.random.default_rng(seed)
    boot = np.array([crit(rng.integers(0, len(clips), len(clips))) for _ in range(n_boot)])
    each = {}
    for k, lens in enumerate(LENSES):
        b = boot[:, k][np.isfinite(boot[:, k])]
        each[lens] = (float(est[k]), *(_basic(est[k], b) if b.size and np.isfinite(est[k]) else (np.nan, np.nan)))
    shift, diffs = est[0] - est[1], boot[:, 0] - boot[:, 1]
    diffs = diffs[np.isfinite(diffs)]
    hypothesis = (f"{track}: the tuned lens resolves the attribute at an earlier layer than the logit lens (critical "
                  "layer of the label-balanced information score, logit − tuned, same clips)")  # fmt: skip
    test = "paired bootstrap over clips (basic interval, one-sided p from the resamples)"
    if not np.isfinite(shift) or not diffs.size:
        return stats.Verdict(hypothesis, float(shift), np.nan, np.nan, np.nan, len(clips), test,
                             note="no layer above chance under one of the lenses"), each  # fmt: skip
    p = float((1 + (diffs <= 0).sum()) / (1 + diffs.size))
    verdict = stats.Verdict(hypothesis, float(shift), *_basic(shift, diffs), p, len(clips), test)
    return verdict.matters(stats.MIN_EFFECT["layers"]), each


def _plot(curves: pd.DataFrame, path, title: str):
    """KL to the final distribution (with its 95% band) and the label-balanced information score per layer, each
    lens."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for lens, g in curves.groupby("lens", sort=False):
        (line,) = a.plot(g["layer"], g["kl"], marker=".", label=f"{lens} lens")
        a.fill_between(g["layer"], g["kl_lo"], g["kl_hi"], alpha=0.2, color=line.get_color())
        b.plot(g["layer"], g["balanced_score"], marker=".", label=f"{lens} lens", color=line.get_color())
    a.set(xlabel="layer", ylabel="KL(final ‖ lens), nats", yscale="symlog")
    b.set(xlabel="layer", ylabel="label-balanced information score", ylim=(-0.02, 1.02))
    for ax in (a, b):
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)
