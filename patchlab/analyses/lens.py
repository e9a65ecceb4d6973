"""The logit lens (AudioLens): each clip's label read out at every layer and position; information scores,
critical layers and whether the label is decodable at the last layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import Field

from .. import verdicts as V
from ..answer import option_choice
from ..data import build_prompt, label_set, load_track
from ..errors import PatchlabError
from ..io import write_table
from ..lens import (
    chance_threshold,
    clip_critical_layers,
    critical_layer,
    critical_layers,
    information_scores,
    label_critical_layers,
    sample_lens,
    score_matrix,
)
from ..report import plots
from ..tuned import Translators, check_held_out, digest, translators_for, translators_path
from .base import Analysis, Float, Int, Merged, Options, ShardContext

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this package's registry
    from ..experiment import Experiment


class LensOptions(Options):
    last_text: Int = Field(5, ge=1)
    audio_bins: Int = Field(10, ge=1)
    alpha: Float = Field(0.2, ge=0)
    weight: Literal["excess", "score"] = "excess"
    kind: Literal["logit", "tuned"] = "logit"  # tuned: each layer read through its trained translator
    translators: str | dict[str, str] | None = None  # the tuned lens (default: the small models' committed ones)


def tuned_files(exp: Experiment) -> dict[str, Path]:
    """Each model's tuned lens (refused if it cannot be found)."""
    return {model: translators_path(model, exp.lens.translators) for model in exp.models or [exp.model]}


def check_tuned(exp: Experiment) -> None:
    """The tuned lens of every model exists and was not trained on any clip the experiment reads."""
    clips = [s for t in exp.tracks for s in exp.samples(t)]
    for model, path in tuned_files(exp).items():
        check_held_out(path, clips, model)


def tuned_inputs(exp: Experiment) -> dict[str, str]:
    return {f"tuned lens of {model}": digest(path) for model, path in tuned_files(exp).items()}


def reader(ctx: ShardContext) -> Translators | None:
    """What the experiment's lens reads each layer through: None for the logit lens, the translators for the tuned."""
    exp = ctx.exp
    return translators_for(ctx.lalm, exp.model, exp.lens.translators) if exp.lens.kind == "tuned" else None


class LensReading(Analysis):
    """An analysis that reads layers through the experiment's lens: with the tuned lens, its translators must exist,
    be held out from the clips, and enter the run's identity."""

    def check(self, exp: Experiment) -> None:
        if exp.lens.kind == "tuned":
            check_tuned(exp)

    def inputs(self, exp: Experiment) -> dict[str, str]:
        return tuned_inputs(exp) if exp.lens.kind == "tuned" else {}


class Lens(LensReading):
    name = "lens"
    Options = LensOptions
    clips = ("lens",)

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        if not ctx.samples:
            return {}
        exp, opts = ctx.exp, ctx.exp.lens
        rows, answers, translators = [], {}, reader(ctx)
        for s in ctx.samples if "findings" in exp.analyses else ():  # the model's own answer, once per clip
            choice = option_choice(ctx.lalm, s, wave=ctx.waves[s.id])
            answers[s.id] = dict(answer=s.options[choice], answer_correct=choice == s.answer)
        for fmt in exp.formats:
            ls = label_set(ctx.lalm, ctx.track_labels, fmt, exp.label_space)
            for s in ctx.samples:
                try:
                    got = sample_lens(ctx.lalm, ctx.prepared(s, build_prompt(s, fmt)), ls, opts.last_text,
                                      opts.audio_bins, translators)  # fmt: skip
                except PatchlabError as e:
                    ctx.skip(s, e, f"lens[{fmt}]")
                    continue
                rows += [{"track": s.track, "format": fmt, **r, **answers.get(s.id, {})} for r in got]
        return {"lens": pd.DataFrame(rows)}

    def merge(self, m: Merged) -> None:
        if "lens" not in m.tables:
            return
        exp, out, per = m.exp, m.out, m.tables["lens"]
        scores = information_scores(per, by=("track", "format"))
        write_table(out / "tables" / "lens_per_sample.csv", per)
        write_table(out / "tables" / "information_scores.csv", scores)
        m.n_layers = int(per["layer"].max()) + 1
        m.label_counts = {t: len({s.label for s in load_track(exp.root(t), t)}) for t in scores["track"].unique()}
        alpha, weight = exp.lens.alpha, exp.lens.weight
        for (track, fmt), g in scores.groupby(["track", "format"], sort=False):
            n_labels = m.label_counts[track]  # the lens reads the track's label set
            crit = critical_layers(g, n_labels, alpha, weight)
            at_final = g[g.position == "final"].sort_values("layer")
            final = at_final["score"].to_numpy()
            mine = per[(per.track == track) & (per.format == fmt)]
            m.tested.append((track, V.lens_verdict(track, fmt, mine, n_labels)))
            crit_lo, crit_hi = V.critical_layer_ci(mine, n_labels, alpha, weight, seed=exp.seed)
            balanced = at_final["balanced_score"].to_numpy()
            clips = clip_critical_layers(mine, n_labels, alpha, weight)
            t = m.track_summary(track)
            t.setdefault("lens", {})[fmt] = {
                "accuracy_last_layer": float(final[-1]),
                "balanced_accuracy_last_layer": float(at_final["balanced_score"].iloc[-1]),
                "one_label_wins_layers": [int(la) for la in at_final.loc[at_final["one_label_wins"], "layer"]],
                **dict(zip(("accuracy_lo", "accuracy_hi"), V.lens_accuracy_ci(mine))),
                "n_samples": int(mine["sample"].nunique()),
                "critical_layer": crit["final"],
                "critical_layer_lo": crit_lo,
                "critical_layer_hi": crit_hi,
                "chance_threshold": chance_threshold(n_labels, alpha),
                "n_labels": n_labels,
                "max_score": float(final.max()),
                "critical_layers": crit,
                "rank_score_last_layer": float(at_final["rank_score"].iloc[-1]),
                "balanced_critical_layer": critical_layer(balanced, n_labels, alpha, weight),
                "label_critical_layers": label_critical_layers(mine, n_labels, alpha, weight),
                "clips_never_above_chance": int(clips["never_above_chance"].sum()),
                "answer_accuracy": float(mine.drop_duplicates("sample")["answer_correct"].mean())
                if "answer_correct" in mine
                else None,
            }
            path = plots.lens_heatmap(
                score_matrix(g),
                crit,
                out / "plots" / f"lens_{track}_{fmt}.png",
                f"{track} / {fmt} prompt: information score over {t['lens'][fmt]['n_samples']} clips",
                tau=chance_threshold(n_labels, alpha),
            )
            m.plot(f"Logit lens: {track}, {fmt} prompt", path)
