"""Corruptions that make the corrupted run of a (clean, corrupted) pair, each recorded so it can be repeated.

audio swap (default, in-distribution): another clip of the track with a different label, fitted to the
clean clip's length; noise: Gaussian noise on the audio embeddings (scale x their std, seeded); silence:
zeros of the same length; text: a cue word swapped for another of the same token count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Sample, build_prompt, draw_key, fit_length, load_clip
from .errors import PatchlabError
from .hooks import decoder_input_embeds
from .metrics import wide
from .models.base import Batch, HookedLALM, Prompt
from .vocabulary import CORRUPTIONS


@dataclass
class Pair:
    """A clean run and its corrupted twin (same token regions), the true label index, and how it was corrupted."""

    clean: Batch
    corrupt: Batch
    label: int
    sample: str
    corruption: dict[str, Any]
    embed_noise: torch.Tensor | None = field(default=None, repr=False)  # (positions, d) added to inputs_embeds


def _prepare(lalm: HookedLALM, wave: np.ndarray, prompt: Prompt, sample: Sample, like: Batch | None = None) -> Batch:
    return lalm.prepare(wave, lalm.sampling_rate, prompt, like=like, id=sample.id, label=sample.label)


def make_pair(
    lalm: HookedLALM,
    sample: Sample,
    kind: str,
    fmt: str,
    label_index: int,
    pool: list[Sample] | None = None,
    seed: int = 0,
    noise_scale: float = 3.0,
    cue: tuple[str, str] | None = None,
    prompt: Prompt | None = None,
) -> Pair:
    """Build the (clean, corrupted) pair of one sample under corruption `kind` (`prompt` overrides the format's)."""
    if kind not in CORRUPTIONS:
        raise PatchlabError(f"unknown corruption {kind!r}", f"use one of {', '.join(CORRUPTIONS)}")
    key = draw_key(sample.id).encode()[:8].ljust(8, b"\0")
    rng = np.random.default_rng([seed, int.from_bytes(key, "little")])
    wave = load_clip(lalm, sample.path)
    prompt = prompt or build_prompt(sample, fmt)
    clean = _prepare(lalm, wave, prompt, sample)
    info: dict[str, Any] = {"kind": kind, "seed": seed}
    noise = None
    if kind == "swap":
        donors = [s for s in (pool or []) if s.label != sample.label and s.id != sample.id]
        if not donors:
            raise PatchlabError(
                f"no clip with a label other than {sample.label!r} to swap in for {sample.id}",
                "give more clips of the track (--limit), or use --corruption noise/silence",
            )
        first = int(rng.integers(len(donors)))
        order = [first] + [int(i) for i in rng.permutation(len(donors)) if i != first]
        unreadable = []
        for i in order:  # the seeded draw, or (if its audio is broken) the next readable donor in a seeded order
            try:
                donor_wave = load_clip(lalm, donors[i].path)
                break
            except PatchlabError:
                unreadable.append(donors[i].id)
        else:
            raise PatchlabError(
                f"no readable clip with a label other than {sample.label!r} to swap in for {sample.id}",
                "fix the track's broken clips, or use --corruption noise/silence",
            )
        donor = donors[i]
        corrupt = _prepare(lalm, fit_length(donor_wave, wave.shape[0]), prompt, sample, like=clean)
        info.update(donor=donor.id, donor_label=donor.label)
        if unreadable:
            info["unreadable_donors"] = unreadable
    elif kind == "silence":
        corrupt = _prepare(lalm, np.zeros_like(wave), prompt, sample, like=clean)
    elif kind == "noise":
        corrupt = clean
        noise = audio_embedding_noise(lalm, clean, noise_scale, rng)
        info.update(scale=noise_scale)
    else:
        if cue is None:  # the prompt gets a hint naming the true label; the corruption names another label
            cue = (sample.label, _same_length_label(lalm, sample, pool or []))
            prompt = Prompt(f"Hint: {sample.label}. {prompt.instruction}".strip(), prompt.prefix)
            clean = _prepare(lalm, wave, prompt, sample)
        corrupt = _prepare(lalm, wave, text_swap(lalm, prompt, *cue), sample)
        info.update(cue=list(cue))
    clean.regions[0].check_aligned(corrupt.regions[0], f"clean and {kind}-corrupted runs of {sample.id}")
    return Pair(clean, corrupt, label_index, sample.id, info, noise)


def _same_length_label(lalm: HookedLALM, sample: Sample, pool: list[Sample]) -> str:
    """Another label of the track whose verbalization has as many tokens as the sample's own."""

    def n(w: str) -> int:
        return len(lalm.tokenizer.encode(" " + w, add_special_tokens=False))

    others = sorted({s.label for s in pool} - {sample.label})
    same = [o for o in others if n(o) == n(sample.label)]
    if not same:
        raise PatchlabError(
            f"no label of the track has as many tokens as {sample.label!r} to swap into the hint",
            "pass cue=(word, replacement) with equal token counts, or use an audio corruption",
        )
    return same[0]


def text_swap(lalm: HookedLALM, prompt: Prompt, old: str, new: str) -> Prompt:
    """Replace a cue word in the prompt by one with the same token count (so regions stay aligned)."""
    tok = lalm.tokenizer
    n_old, n_new = (len(tok.encode(" " + w, add_special_tokens=False)) for w in (old, new))
    if n_old != n_new:
        raise PatchlabError(
            f"cue {old!r} is {n_old} tokens but {new!r} is {n_new}", "pick a replacement with the same token count"
        )
    word = re.compile(rf"(?<!\w){re.escape(old)}(?!\w)")  # the word itself: 'male' is not swapped inside 'female'
    if not word.search(prompt.instruction + "\n" + prompt.prefix):
        raise PatchlabError(f"cue {old!r} does not occur in the prompt", "put the cue word in the prompt first")
    return Prompt(word.sub(new, prompt.instruction), word.sub(new, prompt.prefix))


def audio_embedding_noise(lalm: HookedLALM, batch: Batch, scale: float, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise for the audio positions of the decoder input: `scale` x the std of the audio embeddings."""
    embeds = decoder_inputs(lalm, batch)[0]
    audio = list(batch.regions[0].audio)
    std = float(wide(embeds[audio]).std())
    noise = torch.zeros_like(embeds, dtype=torch.float32)
    noise[audio] = (
        torch.from_numpy(rng.standard_normal((len(audio), embeds.shape[-1])).astype(np.float32)) * scale * std
    )
    return noise


def decoder_inputs(lalm: HookedLALM, batch: Batch) -> torch.Tensor:
    """The embeddings the decoder receives (audio embeddings already scattered in)."""
    return decoder_input_embeds(lalm, batch.to(lalm.device, lalm.dtype).tensors)
