"""Single-hop accuracy on any SAKURA-format directory: the option whose first token scores highest, per clip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import build_prompt, load_audio, load_track, tracks
from ..models.base import HookedLALM


def option_choice(lalm: HookedLALM, sample, fmt: str = "mc") -> int:
    """Index of the option the model prefers: argmax over the options' first sub-tokens at the answer position
    (whole-option log-probability where two options share their first sub-token)."""
    wave = load_audio(sample.path, lalm.sampling_rate, max_seconds=30)
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
