"""The model's own answer to a multiple-choice question (any family), and single-hop accuracy per track with a
confusion matrix: the option whose first token scores highest, per clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import build_prompt, load_clip, load_track, tracks
from .journal import Journal
from .models.base import HookedLALM


def option_choice(lalm: HookedLALM, sample, fmt: str = "mc", wave: np.ndarray | None = None) -> int:
    """Index of the option the model prefers: argmax over the options' first sub-tokens at the answer position
    (whole-option log-probability where two options share their first sub-token). `wave`: the clip's waveform
    where the caller has already read it."""
    if wave is None:
        wave = load_clip(lalm, sample.path)
    batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(sample, fmt)).to(lalm.device, lalm.dtype)
    with torch.no_grad():
        logits = lalm.model(**batch.tensors, use_cache=False, logits_to_keep=1).logits[0, -1]
    texts = [o if fmt != "direct" else " " + o.lower() for o in sample.options]
    ids = [lalm.token_id(t) for t in texts]
    if len(set(ids)) == len(ids):
        return int(torch.argmax(logits[ids]))
    return int(torch.argmax(torch.tensor([_sequence_logprob(lalm, batch, t) for t in texts])))


def _sequence_logprob(lalm: HookedLALM, batch, text: str) -> float:
    """log p(text | prompt), teacher-forced: for options whose first tokens coincide (Cow / Crow)."""
    extra = lalm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(lalm.device)
    tensors = dict(batch.tensors)
    tensors["input_ids"] = torch.cat([tensors["input_ids"], extra], 1)
    if "attention_mask" in tensors:
        tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    with torch.no_grad():
        logp = lalm.model(**tensors, use_cache=False).logits[0, -extra.shape[1] - 1 : -1].log_softmax(-1)
    return float(logp.gather(1, extra[0, :, None]).sum())


def single_hop_accuracy(
    lalm: HookedLALM,
    data: str | Path,
    track_names: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    journal: Journal | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-clip results (track, id, label, chosen option, correct) on SAKURA's multiple-choice single-hop questions.

    With a `journal`, each clip's row is kept as it finishes and clips an earlier run finished are not run again.
    """
    rows = []
    for track in track_names or tracks(data):
        for s in tqdm(load_track(data, track, limit, seed), desc=f"eval {track}", unit="clip", disable=not progress):
            key = f"{track}/{s.id}"
            if journal is not None and key in journal.done:
                rows += journal.done[key]
                continue
            choice = option_choice(lalm, s)
            row = dict(track=track, id=s.id, label=s.label, chosen=s.options[choice], correct=choice == s.answer)
            rows.append(row)
            if journal is not None:
                journal.add(key, [row])
    return pd.DataFrame(rows)


def accuracy_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, balanced accuracy (mean per-label recall: a label prior cannot fake it) and clip count per track."""
    out = []
    for track, g in per_clip.groupby("track", sort=False):
        recall = g.groupby("label")["correct"].mean()
        out.append(dict(track=track, accuracy=g["correct"].mean(), balanced_accuracy=recall.mean(), clips=len(g)))
    return pd.DataFrame(out)


def confusion(per_clip: pd.DataFrame, track: str) -> pd.DataFrame:
    """Counts of (true label, chosen option) for one track: rows the truth, columns what the model chose."""
    g = per_clip[per_clip.track == track]
    return pd.crosstab(g["label"].str.lower(), g["chosen"].str.lower(), rownames=["label"], colnames=["chosen"])
