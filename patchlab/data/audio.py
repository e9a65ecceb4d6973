"""Audio I/O: read a clip as mono float32 (float64 for a float64 run) at the model's sample rate, with clear errors
for bad files."""

from __future__ import annotations

import warnings
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from ..errors import PatchlabError


def load_audio(
    path: str | Path, rate: int = 16000, max_seconds: float | None = None, dtype: type = np.float32
) -> np.ndarray:
    """Read `path` (WAV/FLAC/OGG), mix channels to mono, resample to `rate`; refuse missing, unreadable, empty clips.
    `dtype` float64 keeps every step in float64 (a float32 cast of a resampled waveform rounds differently where
    numpy's SIMD dispatch designed the filter with another ULP)."""
    path = Path(path)
    if not path.exists():
        raise PatchlabError(f"audio file {path} does not exist", "check the `file` column of metadata.csv")
    try:
        data, sr = sf.read(str(path), dtype=np.dtype(dtype).name, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise PatchlabError(
            f"audio file {path} cannot be read ({e})", "re-encode it as 16-bit WAV or FLAC, or drop it from metadata"
        ) from e
    if data.size == 0 or data.shape[0] == 0:
        raise PatchlabError(f"audio file {path} is empty (0 samples)", "remove the clip or replace it with real audio")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise PatchlabError(
            f"audio file {path} holds {bad} NaN/inf samples (a float file written from broken audio)",
            "re-export the clip from its source, or drop it from metadata.csv",
        )
    if data.shape[1] > 1:
        warnings.warn(f"{path} has {data.shape[1]} channels: mixed to mono (their mean)", stacklevel=2)
    wave = data.mean(axis=1)
    if sr != rate:
        g = gcd(int(sr), int(rate))
        wave = resample_poly(wave, rate // g, int(sr) // g).astype(dtype)
    if max_seconds is not None and wave.shape[0] > max_seconds * rate:
        raise PatchlabError(
            f"audio file {path} lasts {wave.shape[0] / rate:.1f} s, longer than the model's {max_seconds:.0f} s window",
            "trim the clip (e.g. `sox in.wav out.wav trim 0 30`) or use a model with a longer window",
        )
    return wave


def load_clip(lalm: Any, path: str | Path) -> np.ndarray:
    """A clip as `lalm` (a HookedLALM) takes it: mono, at its sample rate, within its window, and in float64 for a
    float64 run (so that run is float64 from the decoded samples on)."""
    dtype = np.float64 if str(lalm.dtype) == "torch.float64" else np.float32
    return load_audio(path, lalm.sampling_rate, max_seconds=lalm.adapter.max_seconds, dtype=dtype)


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad a waveform to exactly n samples (so two clips give the same number of audio tokens)."""
    if wave.shape[0] >= n:
        return wave[:n].copy()
    return np.concatenate([wave, np.zeros(n - wave.shape[0], dtype=wave.dtype)])
