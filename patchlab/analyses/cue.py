"""Listen vs guess: each clip with a text cue that agrees with its label and one that conflicts; whether the answer
follows the audio or the cue, and the grounding under each condition."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch

from .. import verdicts as V
from ..data import Sample, build_prompt, draw_key, verbalize
from ..io import write_table
from ..models.base import Prompt
from ..vocabulary import CORRUPTIONS
from .base import Analysis, Merged, Options, ShardContext, pair_of
from .ground import ground
from .patch import patch_rows

_ATTRIBUTE = {
    "Gender": "speaker's gender",
    "Language": "language spoken",
    "Emotion": "speaker's emotion",
    "Animal": "animal",
    "Letter": "letter spoken",
}


class CueOptions(Options):
    corruption: Literal[CORRUPTIONS] = "swap"  # type: ignore[valid-type]


def cue_prompt(sample: Sample, fmt: str, cue_label: str) -> Prompt:
    """The sample's prompt with a textual cue naming `cue_label` in front ("Note: the language spoken is German.")."""
    base = build_prompt(sample, fmt)
    attr = _ATTRIBUTE.get(sample.track, sample.track.lower())
    return Prompt(f"Note: the {attr} is {verbalize(cue_label, 'qa')}. {base.instruction}".strip(), base.prefix)


def conflicting(sample: Sample, labels: list[str], seed: int) -> str:
    """The label a conflicting cue names for `sample`: one of the others, drawn by the clip (seeded)."""
    key = draw_key(sample.id)
    rng = np.random.default_rng([seed, len(key), sum(map(ord, key))])
    others = [la for la in labels if la != sample.label]
    return others[int(rng.integers(len(others)))]


class Cue(Analysis):
    name = "cue"
    Options = CueOptions
    clips = ("cue",)
    pairs = True

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        samples = ctx.paired
        if not samples:
            return {}
        lalm, exp, labels = ctx.lalm, ctx.exp, ctx.labels
        rows, patches = [], []
        for condition in ("agree", "conflict"):
            prompts = {}
            for s in samples:
                cue = s.label if condition == "agree" else conflicting(s, ctx.track_labels, exp.seed)
                prompts[s.id] = cue_prompt(s, exp.prompt, cue)
                batch = lalm.prepare(ctx.waves[s.id], lalm.sampling_rate, prompts[s.id])
                with torch.no_grad():
                    logits = lalm.forward(batch)[0, -1, list(labels.token_ids)]
                chosen = labels.labels[int(logits.argmax())]
                follows = dict(follows_audio=chosen == s.label, follows_cue=chosen == cue)
                rows.append(dict(track=s.track, condition=condition, sample=s.id, label=s.label, cue=cue,
                                 chosen=chosen, **follows))  # fmt: skip
            pairs = [pair_of(lalm, exp, s, exp.cue.corruption, ctx.pool, labels, prompts[s.id]) for s in samples]
            patches.append(patch_rows(lalm, exp, pairs, labels, samples[0].track, condition))
        return {"cue": pd.DataFrame(rows), "cue_patch": pd.concat(patches, ignore_index=True)}

    def merge(self, m: Merged) -> None:
        if "cue" not in m.tables:
            return
        cue, patched = m.tables["cue"], m.tables["cue_patch"]
        write_table(m.out / "tables" / "cue.csv", cue)
        write_table(m.out / "tables" / "cue_patching.csv", patched)
        for track, g in cue.groupby("track", sort=False):
            res = {}
            for cond, h in g.groupby("condition", sort=False):
                overall = ground(patched[(patched.track == track) & (patched.condition == cond)], m.exp).overall
                res[cond] = {
                    "follows_audio": float(h["follows_audio"].mean()),
                    "follows_cue": float(h["follows_cue"].mean()),
                    "n": int(len(h)),
                    "share": overall["share"],
                    "share_lo": overall["share_lo"],
                    "share_hi": overall["share_hi"],
                    "dropped": overall["dropped"],
                }
            verdict = V.cue_verdict(track, g, m.exp.seed)
            m.tested.append((track, verdict))
            res["test"] = verdict
            m.track_summary(track)["listen_vs_guess"] = res

    def finish(self, m: Merged) -> None:
        """Each track's listen-vs-guess entry quotes its verdict once Holm has corrected it."""
        for t in m.summary["tracks"].values():
            lvg = t.get("listen_vs_guess")
            if lvg:
                v = lvg.pop("test")
                lvg.update(p=v.p, p_corrected=v.p_corrected, n_test=v.n)
                lvg["verdict"] = {
                    "supported": "listens",
                    "refuted": "guesses from the text cue",
                    "negligible": "neither: following the audio and the cue differ too little to matter",
                }.get(v.verdict, f"inconclusive ({v.note or 'the test does not reach the level'})")
