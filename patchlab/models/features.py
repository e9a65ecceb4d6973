"""Whisper log-mel features in float64 for float64 runs. transformers casts the waveform to float32 and computes the
log-mel in float32 whatever the model's dtype, and float32 rounds differently on each CPU kernel (AVX2, AVX-512,
none) and wherever numpy's SIMD dispatch gave a resampling filter another ULP: a float64 run keeps the waveform it
was given and computes the log-mel from it in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Float64Features:
    """Placed before a WhisperFeatureExtractor's class on a float64 run's instance: keeps the float64 waveform of the
    call, which `_torch_extract_fbank_features` then uses (transformers pads it with zeros to the 30 s window)."""

    _wave64: np.ndarray | None = None

    def __call__(self, raw_speech: Any, *args: Any, **kwargs: Any) -> Any:
        one = isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 1
        self._wave64 = np.asarray(raw_speech, dtype=np.float64) if one else None
        try:
            return super().__call__(raw_speech, *args, **kwargs)
        finally:
            self._wave64 = None

    def _torch_extract_fbank_features(self, waveform: np.ndarray, device: str = "cpu") -> np.ndarray:
        """WhisperFeatureExtractor's torch log-mel, step for step, in float64 (no dither: a float64 run is exact)."""
        wave = np.asarray(waveform, dtype=np.float64)
        mine = self._wave64
        if mine is not None and wave.ndim == 2 and wave.shape[0] == 1 and mine.size <= wave.shape[1]:
            if np.array_equal(waveform[0, : mine.size], mine.astype(waveform.dtype)):  # the same clip, padded
                wave = np.zeros_like(wave)
                wave[0, : mine.size] = mine
        wave = torch.from_numpy(wave).to(device)
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
    """Make `processor`'s Whisper feature extractor keep the waveform in float64 and compute its log-mel in float64;
    False where it has none (another feature extractor, whose float32 rounding docs/reproducibility.md lists)."""
    fe = getattr(processor, "feature_extractor", None)
    if fe is None or not hasattr(fe, "_torch_extract_fbank_features") or not hasattr(fe, "mel_filters"):
        return False
    if getattr(fe, "dither", 0.0) or isinstance(fe, Float64Features):
        return not getattr(fe, "dither", 0.0)
    fe.__class__ = type(f"Float64{type(fe).__name__}", (Float64Features, type(fe)), {})
    return True
