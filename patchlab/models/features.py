"""Whisper log-mel features in float64 for float64 runs: transformers computes them in float32 whatever the model's
dtype, and a float32 STFT and mel product round differently on each CPU kernel (AVX2, AVX-512, none)."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch


def _fbank64(self: Any, waveform: np.ndarray, device: str = "cpu") -> np.ndarray:
    """WhisperFeatureExtractor's torch log-mel, step for step, in float64 (no dither: a float64 run is exact)."""
    wave = torch.from_numpy(np.asarray(waveform)).to(device, torch.float64)
    window = torch.hann_window(self.n_fft, device=device, dtype=torch.float64)
    stft = torch.stft(wave, self.n_fft, self.hop_length, window=window, return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    mel = torch.from_numpy(np.asarray(self.mel_filters)).to(device, torch.float64).T @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    if wave.dim() == 2:
        top = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
    else:
        top = log_spec.max()
    return ((torch.maximum(log_spec, top - 8.0) + 4.0) / 4.0).cpu().numpy()


def features_in_float64(processor: Any) -> bool:
    """Make `processor`'s Whisper feature extractor compute its log-mel in float64; False where it has none
    (another feature extractor, whose float32 rounding docs/reproducibility.md lists)."""
    fe = getattr(processor, "feature_extractor", None)
    if fe is None or not hasattr(fe, "_torch_extract_fbank_features") or not hasattr(fe, "mel_filters"):
        return False
    if getattr(fe, "dither", 0.0):
        return False
    fe._torch_extract_fbank_features = types.MethodType(_fbank64, fe)
    return True
