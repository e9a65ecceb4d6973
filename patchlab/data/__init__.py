"""Data: SAKURA-format loader, audio I/O, prompt formats and label sets."""

from .audio import fit_length, load_audio
from .prompts import FORMATS, LabelSet, build_prompt, label_set, verbalize
from .sakura import Sample, load_track, parse_options, tracks
from .synth import tone, tone_gender_track

__all__ = [
    "FORMATS",
    "LabelSet",
    "Sample",
    "build_prompt",
    "fit_length",
    "label_set",
    "load_audio",
    "load_track",
    "parse_options",
    "tone",
    "tone_gender_track",
    "tracks",
    "verbalize",
]
