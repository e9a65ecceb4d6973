"""Data: SAKURA-format loader, audio I/O, prompt formats and label sets."""

from ..vocabulary import FORMATS
from .audio import fit_length, load_audio, load_clip
from .prompts import LabelSet, build_prompt, label_set, verbalize
from .sakura import Sample, draw_key, fingerprint, labels_of, load_track, parse_options, track_labels, tracks
from .synth import tone, tone_gender_track

__all__ = [
    "FORMATS",
    "LabelSet",
    "Sample",
    "build_prompt",
    "draw_key",
    "fingerprint",
    "fit_length",
    "label_set",
    "labels_of",
    "load_audio",
    "load_clip",
    "load_track",
    "parse_options",
    "tone",
    "tone_gender_track",
    "track_labels",
    "tracks",
    "verbalize",
]
