"""Encoder probes: the attribute decoded from each audio-encoder layer by an out-of-fold linear probe, drawn beside
the decoder's logit lens (where the encoder has it before the decoder reads it)."""

from __future__ import annotations

import pandas as pd

from .. import stats
from ..data import build_prompt
from ..io import write_table
from ..lens import information_scores
from ..probe import probe_clips, probe_scores
from ..report import plots
from .base import Analysis, Merged, ShardContext


class Probe(Analysis):
    name = "probe"

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        if not ctx.samples:
            return {}
        sr = ctx.lalm.sampling_rate
        clips = [(s.id, s.label, ctx.prepared(s, build_prompt(s, ctx.exp.prompt)), len(ctx.waves[s.id]) / sr)
                 for s in ctx.samples]  # fmt: skip
        t = probe_clips(ctx.lalm, clips)
        t.insert(0, "track", ctx.track)
        return {"probe": t}

    def merge(self, m: Merged) -> None:
        """Per track: out-of-fold balanced accuracy per encoder layer, and whether the last layer decodes it."""
        probes = m.table("probe")
        if probes is None:
            return
        exp = m.exp
        for track, g in probes.groupby("track", sort=False):
            table, info = probe_scores(g.drop(columns="track"), seed=exp.seed)
            right = info.pop("last_layer_correct")
            write_table(m.out / "tables" / f"encoder_probe_{track}.csv", table)
            t = m.track_summary(track)
            t["encoder_probe"] = {**info, "balanced_accuracy": table["balanced_accuracy"].tolist()}
            prior = g.drop_duplicates("sample")["label"].value_counts(normalize=True).max()
            last = int(table["encoder_layer"].max())
            m.tested.append((track, stats.above_chance(
                f"{track}: the attribute is linearly decodable from the audio encoder's last layer (layer {last}; "
                "out-of-fold probe, against the majority-label share)", list(right.values()), float(prior),
            ).matters(stats.MIN_EFFECT["accuracy"])))  # fmt: skip
            lens = m.table("lens")
            decoder = None
            if lens is not None:
                mine = lens[(lens.track == track) & (lens.format == exp.prompt) & (lens.position == "final")]
                decoder = information_scores(mine).sort_values("layer") if len(mine) else None
            title = f"{track}: from the first encoder layer to the last decoder layer"
            path = plots.encoder_decoder(table, decoder, m.out / "plots" / f"encoder_probe_{track}.png", title, info)
            m.plot(f"Encoder probe and decoder lens: {track}", path)
