"""Prompt formats (direct, question-answer, multiple-choice) and the label set read by the logit lens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PatchlabError
from ..vocabulary import FORMATS, LABEL_SPACES
from .sakura import Sample

if TYPE_CHECKING:  # a type hint only: the data layer runs without the models layer
    from ..models.base import HookedLALM


@dataclass(frozen=True)
class Prompt:
    """What the user turn says after the audio, and what the assistant turn already starts with."""

    instruction: str = ""
    prefix: str = ""


_ATTRIBUTE = {
    "Gender": ("gender", "The speaker's gender is"),
    "Language": ("language", "The language spoken is"),
    "Emotion": ("emotion", "The speaker's emotion is"),
    "Animal": ("animal", "The animal making this sound is a"),
    "Letter": ("letter", "The letter spoken is"),
}


def _attribute(track: str) -> tuple[str, str]:
    return _ATTRIBUTE.get(track, (track.lower(), f"The {track.lower()} is"))


def build_prompt(sample: Sample, fmt: str) -> Prompt:
    """The prompt for a sample: direct continuation, a question, or SAKURA's multiple-choice question."""
    name, direct = _attribute(sample.track)
    if fmt == "direct":
        return Prompt(instruction="", prefix=direct)
    if fmt == "qa":
        return Prompt(instruction=f"What is the {name} in this audio? Answer in one word.", prefix="")
    if fmt == "mc":
        return Prompt(instruction=f"{sample.question} Answer with the option's text only.", prefix="")
    raise PatchlabError(f"unknown prompt format {fmt!r}", f"use one of {', '.join(FORMATS)}")


def verbalize(label: str, fmt: str, space: str = "auto") -> str:
    """How a label is written where the answer starts. `auto` (patchlab's default): ' female' after a direct prefix,
    'Female' at a new turn; `none` (AudioLens' reading): the option as SAKURA writes it, 'Female', with no leading
    space in every format; `space`: the auto form with a leading space (' female', ' Female')."""
    if space not in LABEL_SPACES:
        raise PatchlabError(f"unknown label_space {space!r}", f"use one of {', '.join(LABEL_SPACES)}")
    option = label[:1].upper() + label[1:]
    if space == "none":
        return option
    word = f" {label}" if fmt == "direct" else option
    return word if space == "auto" or word.startswith(" ") else f" {word}"


@dataclass(frozen=True)
class LabelSet:
    """The labels of a track and the first sub-token id of each verbalization (what the lens reads)."""

    labels: tuple[str, ...]
    token_ids: tuple[int, ...]
    verbalizations: tuple[str, ...]

    def index(self, label: str) -> int:
        return self.labels.index(label)


def label_set(lalm: HookedLALM, labels: list[str], fmt: str, space: str = "auto") -> LabelSet:
    """First sub-token of each label's verbalization (`space`: see `verbalize`); two labels that share it get a clear
    error."""
    labels = sorted(dict.fromkeys(labels))
    verbs = [verbalize(la, fmt, space) for la in labels]
    ids = [lalm.token_id(v) for v in verbs]
    seen: dict[int, str] = {}
    for la, t in zip(labels, ids):
        if t in seen:
            tok = lalm.tokenizer.convert_ids_to_tokens(t)
            raise PatchlabError(
                f"labels {seen[t]!r} and {la!r} share their first sub-token {tok!r} (id {t}) in format {fmt!r}",
                "use another prompt format or label_space, or relabel one option so each starts with its own token",
            )
        seen[t] = la
    return LabelSet(tuple(labels), tuple(ids), tuple(verbs))
