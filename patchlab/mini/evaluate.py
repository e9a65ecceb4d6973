"""Single-hop accuracy on any SAKURA-format directory: the option whose first token scores highest, per clip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import build_prompt, load_audio, load_track, tracks
from ..models.base import HookedLALM


def option_choice(lalm: HookedLALM, sample, fmt: str = "mc") -> int:
    """Index of the option the model prefers: argmax over each option's first sub-token at the answer position."""
    wave = load_audio(sample.path, lalm.sampling_rate, max_seconds=30)
    batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(sample, fmt)).to(lalm.device, lalm.dtype)
    with torch.no_grad():
        logits = lalm.model(**batch.tensors, use_cache=False, logits_to_keep=1).logits[0, -1]
    ids = [lalm.token_id(o if fmt != "direct" else " " + o.lower()) for o in sample.options]
    return int(torch.argmax(logits[ids]))


def single_hop_accuracy(
    lalm: HookedLALM, data: str | Path, track_names: list[str] | None = None, limit: int | None = None
) -> pd.DataFrame:
    """Per-clip results (track, id, label, chosen option, correct) on SAKURA's multiple-choice single-hop questions."""
    rows = []
    for track in track_names or tracks(data):
        for s in tqdm(load_track(data, track, limit), desc=f"eval {track}", unit="clip"):
            choice = option_choice(lalm, s)
            rows.append(dict(track=track, id=s.id, label=s.label, chosen=s.options[choice], correct=choice == s.answer))
    return pd.DataFrame(rows)


def accuracy_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and clip count per track."""
    g = per_clip.groupby("track", sort=False)["correct"]
    return pd.DataFrame({"accuracy": g.mean(), "clips": g.size()}).reset_index()
