"""Token-region map: which positions of a prompt hold audio, text, special markers, the final token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import PatchlabError
from .vocabulary import REGION_NAMES


@dataclass(frozen=True)
class Regions:
    """Positions of one sample's token sequence, by region (all index lists are ascending).

    The regions do not overlap: `text` holds the prompt's text tokens *without* the final position, which is a
    region of its own, so Δ_text and Δ_final measure different positions (AudioLens RQ4 asks which one reads audio).
    `transcript` holds the text an ASR front end wrote into the prompt from the clip (DeSTA2 inserts Whisper's
    transcription after the audio): words heard, neither sound nor the user's text; empty for families without one.
    """

    length: int
    audio: tuple[int, ...]
    text: tuple[int, ...]
    special: tuple[int, ...]
    transcript: tuple[int, ...] = ()

    @property
    def final(self) -> tuple[int, ...]:
        return (self.length - 1,)

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(range(self.length))

    @classmethod
    def from_ids(cls, input_ids: torch.Tensor, audio_token_id: int, special_ids: set[int]) -> Regions:
        """Build the map from one row of token ids: audio placeholders, special markers, the rest is text."""
        ids = input_ids.tolist()
        audio = tuple(i for i, t in enumerate(ids) if t == audio_token_id)
        special = tuple(i for i, t in enumerate(ids) if t != audio_token_id and t in special_ids)
        last = len(ids) - 1
        text = tuple(i for i, t in enumerate(ids) if t != audio_token_id and t not in special_ids and i != last)
        special = tuple(i for i in special if i != last)
        return cls(length=len(ids), audio=audio, text=text, special=special)

    def positions(self, name: str) -> tuple[int, ...]:
        """Positions of a region by name (audio, text, special, final, all)."""
        if name not in REGION_NAMES:
            raise PatchlabError(f"unknown region {name!r}", f"use one of {', '.join(REGION_NAMES)}")
        return getattr(self, name)

    def addresses(self, last_text: int = 5, audio_bins: int = 10) -> list[tuple[str, tuple[int, ...]]]:
        """Named position groups for the lens: the final token, the last k text tokens, audio in relative bins."""
        out: list[tuple[str, tuple[int, ...]]] = [("final", self.final)]
        for k in range(1, min(last_text, len(self.text)) + 1):
            out.append((f"text-{k}", (self.text[-k],)))
        if self.transcript:
            out.append(("transcript", self.transcript))
        n = len(self.audio)
        for b in range(audio_bins if n else 0):
            lo, hi = (b * n) // audio_bins, ((b + 1) * n) // audio_bins
            if hi > lo:
                out.append((f"audio-{b * 100 // audio_bins:02d}%", self.audio[lo:hi]))
        return out

    def check_aligned(self, other: Regions, what: str = "clean and corrupted runs") -> None:
        """Raise a clear error unless two runs have the same length and the same regions."""
        for name in ("length", "audio", "transcript", "text", "special"):
            if getattr(self, name) != getattr(other, name):
                mine, theirs = getattr(self, name), getattr(other, name)
                if name != "length":
                    mine, theirs = (
                        f"{len(mine)} positions from {mine[:1]}",
                        f"{len(theirs)} positions from {theirs[:1]}",
                    )
                raise PatchlabError(
                    f"{what} have token regions that do not line up: {name} is {mine} vs {theirs}",
                    "corrupt with a clip of the same duration (patchlab.corrupt fits swapped audio to the clean "
                    "clip's length) and keep the prompt's token count unchanged",
                )
