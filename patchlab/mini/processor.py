"""patchlab-mini's processor: Whisper log-mel features + SmolLM2's tokenizer with one audio placeholder per token."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..data import load_audio
from ..data.sakura import Sample
from ..errors import PatchlabError
from .modeling import audio_token_count
from .qformer import TappedAudio

AUDIO_TOKEN = "<|AUDIO|>"


class PatchlabMiniProcessor:
    """Expands the single `<|AUDIO|>` in a prompt to as many placeholders as the clip has audio tokens (stacked
    frames, plus the language-ID token when the model has one)."""

    def __init__(self, feature_extractor, tokenizer, stack: int = 4, language_token: bool = False) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.stack = stack
        self.language_token = language_token

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PatchlabMiniProcessor:
        import json

        from transformers import AutoTokenizer, WhisperFeatureExtractor

        config = json.loads((Path(path) / "config.json").read_text())
        return cls(
            WhisperFeatureExtractor.from_pretrained(path),
            AutoTokenizer.from_pretrained(path, trust_remote_code=False),
            config.get("stack", 4),
            bool(config.get("language_token_ids")),
        )

    def save_pretrained(self, path: str | Path) -> None:
        self.feature_extractor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def features(self, audio: np.ndarray, sampling_rate: int) -> dict[str, torch.Tensor]:
        """Log-mel features padded to Whisper's 30 s window, and the mask of the clip's own frames."""
        window = self.feature_extractor.n_samples
        if len(audio) > window:
            raise PatchlabError(
                f"clip of {len(audio) / sampling_rate:.1f} s is longer than patchlab-mini's 30 s window",
                "trim the clip (patchlab.data.load_audio(path, max_seconds=30)) or split it",
            )
        out = self.feature_extractor(
            audio, sampling_rate=sampling_rate, return_attention_mask=True, padding="max_length", return_tensors="pt"
        )
        return {"input_features": out.input_features, "feature_attention_mask": out.attention_mask}

    def __call__(self, text: str, audio: np.ndarray, sampling_rate: int, return_tensors: str = "pt") -> dict:
        feats = self.features(audio, sampling_rate)
        frames = max(int(audio_token_count(int(feats["feature_attention_mask"].sum()), self.stack)), 1)
        n = frames + self.language_token
        if text.count(AUDIO_TOKEN) != 1:
            raise PatchlabError(f"prompt must hold exactly one {AUDIO_TOKEN}", "build it with the adapter's chat_text")
        ids = self.tokenizer(text.replace(AUDIO_TOKEN, AUDIO_TOKEN * n), return_tensors="pt")
        return {**ids, **feats}


class PatchlabQformerProcessor(PatchlabMiniProcessor):
    """Whisper log-mel features, SmolLM2's tokenizer, and Whisper's tokenizer (`whisper_tokenizer`, to write the
    transcription as text): the prompt's one `<|AUDIO|>` becomes one placeholder per query, then the transcription."""

    def __init__(self, feature_extractor, tokenizer, whisper_tokenizer, queries: int = 32) -> None:
        super().__init__(feature_extractor, tokenizer)
        self.whisper_tokenizer = whisper_tokenizer
        self.queries = queries

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PatchlabQformerProcessor:
        import json

        from transformers import AutoTokenizer, WhisperFeatureExtractor

        config = json.loads((Path(path) / "config.json").read_text())
        return cls(
            WhisperFeatureExtractor.from_pretrained(path),
            AutoTokenizer.from_pretrained(path, trust_remote_code=False),
            AutoTokenizer.from_pretrained(Path(path) / "whisper", trust_remote_code=False),
            config.get("queries", 32),
        )

    def save_pretrained(self, path: str | Path) -> None:
        super().save_pretrained(path)
        self.whisper_tokenizer.save_pretrained(Path(path) / "whisper")

    def expand(self, text: str, transcript: str) -> tuple[str, int]:
        """The prompt text with placeholders and transcription written in, and the transcription's first character."""
        if text.count(AUDIO_TOKEN) != 1:
            raise PatchlabError(f"prompt must hold exactly one {AUDIO_TOKEN}", "build it with the adapter's chat_text")
        start = text.index(AUDIO_TOKEN) + len(AUDIO_TOKEN) * self.queries
        return TappedAudio(torch.empty(0), transcript, self.queries).expand(text, AUDIO_TOKEN), start


def distinct_audio(samples: list[Sample], rate: int) -> tuple[dict, dict[str, str]]:
    """Each distinct clip's audio keyed by a hash of its samples (a clip in two tracks is one clip), and each
    sample path's key: what the frozen audio side is computed for, once."""
    keyed, key_of = {}, {}
    for s in samples:
        audio = load_audio(s.path, rate=rate, max_seconds=30)
        key_of[str(s.path)] = hashlib.sha1(audio.tobytes()).hexdigest()
        keyed.setdefault(key_of[str(s.path)], audio)
    return keyed, key_of
