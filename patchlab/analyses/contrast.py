"""Two tracks contrasted (the seed's open question 2: is "querying the audio directly" the same for a phonetic
attribute as for a semantic one?): the same model's knockout and critical layer on track A against track B, each
difference tested over independent clips (permutation test, `stats.two_sample`). Whether a model with a transcript
answers a track from it rather than from the audio is tested per track by the cross-model comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import Field

from .. import stats
from ..data import load_track
from ..errors import PatchlabError
from ..io import write_table
from ..lens import clip_critical_depths
from ..vocabulary import REGION_NAMES
from .base import Analysis, Int, Merged, Options

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this package's registry
    from ..experiment import Experiment


class ContrastOptions(Options):
    tracks: list[str] = Field(default_factory=list, max_length=2)  # [A, B]: A's measurements against B's
    query: Literal[REGION_NAMES] = "final"  # type: ignore[valid-type]
    key: Literal[REGION_NAMES] = "audio"  # type: ignore[valid-type]
    start: Int = Field(0, ge=0)  # the knockout window from this layer to the top


class Contrast(Analysis):
    name = "contrast"
    Options = ContrastOptions

    def check(self, exp: Experiment) -> None:
        opts = exp.contrast
        missing = [t for t in opts.tracks if t not in exp.tracks]
        if missing or len(opts.tracks) != 2 or opts.tracks[0] == opts.tracks[1]:
            raise PatchlabError(
                f"contrast.tracks {opts.tracks} must be two different tracks of this experiment ({exp.tracks})",
                "list two of the experiment's tracks, e.g. contrast: {tracks: [Letter, Language]}",
            )
        needs = [a for a in ("lens", "knockout") if a not in exp.analyses]
        if exp.prompt not in exp.formats:
            raise PatchlabError(
                f"contrast reads the lens in the prompt format {exp.prompt!r}, which formats {exp.formats} lacks",
                f"add {exp.prompt!r} to formats",
            )
        if needs:
            raise PatchlabError(
                f"contrast compares the tracks' lens and knockout rows, but analyses lacks {needs}",
                f"add {needs} to analyses",
            )
        layers = exp.knockout.layers
        if layers is not None and opts.start not in layers:
            raise PatchlabError(
                f"contrast.start {opts.start} is not among knockout.layers {layers}", "list it in knockout.layers"
            )

    def merge(self, m: Merged) -> None:
        exp, opts = m.exp, m.exp.contrast
        knock, lens = m.table("knockout"), m.table("lens")
        if not self.wanted(exp) or knock is None or lens is None:
            return
        a, b = opts.tracks
        per = {t: _per_clip(exp, lens, knock, t) for t in (a, b)}
        if any(p.empty for p in per.values()):
            return
        table = pd.concat([p.assign(track=t) for t, p in per.items()], ignore_index=True)
        write_table(m.out / "tables" / f"contrast_{a}_{b}.csv", table)
        window = f"{opts.query}→{opts.key} from layer {opts.start}"
        entry: dict = {"tracks": [a, b], "knockout": window}
        for t in (a, b):
            loss = per[t]["logprob_loss"]
            m.tested.append((t, stats.paired(
                f"{t}: blocking {window} lowers the answer's log-probability (the final position reads the audio "
                "directly)", loss, seed=exp.seed).matters(stats.MIN_EFFECT["logit"])))  # fmt: skip
            entry[t] = {**stats.mean_interval("logprob_loss", loss, exp.seed),
                        **stats.mean_interval("critical_depth", per[t]["critical_depth"], exp.seed),
                        "n": len(per[t])}  # fmt: skip
        pa, pb = per[a], per[b]
        m.tested.append((a, stats.two_sample(
            f"{a} vs {b}: blocking {window} costs {a}'s answer more log-probability than {b}'s",
            pa["logprob_loss"], pb["logprob_loss"], seed=exp.seed).matters(stats.MIN_EFFECT["logit"])))  # fmt: skip
        m.tested.append((a, stats.two_sample(
            f"{a} vs {b}: {a}'s label is read out at a later layer than {b}'s (each clip's critical layer at the final "
            "position, as a share of the depth)", pa["critical_depth"], pb["critical_depth"],
            seed=exp.seed).matters(stats.MIN_EFFECT["depth"])))  # fmt: skip
        m.summary.setdefault("contrast", {}).update(entry)


def _per_clip(exp: Experiment, lens: pd.DataFrame, knock: pd.DataFrame, track: str) -> pd.DataFrame:
    """One row per clip of `track`: the log-probability its answer loses under the knockout window and its critical
    layer as a share of the depth."""
    opts = exp.contrast
    k = knock[(knock.track == track) & (knock["knockout"] == f"{opts.query}->{opts.key}") & (knock.start == opts.start)]
    per = lens[(lens.track == track) & (lens.format == exp.prompt)]
    if k.empty or per.empty:
        return pd.DataFrame()
    n_labels = len({s.label for s in load_track(exp.root(track), track)})
    out = clip_critical_depths(per, n_labels, exp.lens.alpha, exp.lens.weight)
    loss = k.groupby("sample")["logprob_change"].first().mul(-1).rename("logprob_loss")
    return out.merge(loss.reset_index(), on="sample", how="outer")
