"""Whisper base's own transcription of a clip (greedy, as CTranslate2's `generate` decodes without timestamps).

patchlab-mini-qformer inserts it as text after the audio, as DeSTA2 inserts its Whisper's transcription. The language
is Whisper's own language ID (the most likely of its 99 language tokens after the start-of-transcript token).
"""

from __future__ import annotations

import inspect
import json

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.whisper.modeling_whisper import WhisperDecoder

_CACHE_ARG = "cache" if "cache" in inspect.signature(WhisperDecoder.forward).parameters else "past_key_values"


class WhisperTranscriber(nn.Module):
    """Greedy decoding with Whisper's decoder and the wheel's suppression lists (`suppress_ids` always,
    `suppress_ids_begin` at the first step, every special token but end-of-text), at most `max_tokens` tokens."""

    def __init__(self, decoder: nn.Module, table: dict) -> None:
        super().__init__()
        self.decoder = decoder
        self.sot = table["start_token_id"]
        self.eot = table["end_token_id"]
        self.transcribe = table["transcribe_token_id"]
        self.no_timestamps = table["no_timestamps_token_id"]
        self.language_ids = [lang["token_id"] for lang in table["languages"]]
        self.suppress = sorted(set(table["suppress_ids"]))
        self.suppress_begin = sorted(set(table["suppress_ids_begin"]))
        self.max_tokens = table["max_tokens"]

    def _logits(self, ids: torch.Tensor, encoder_hidden: torch.Tensor, cache) -> torch.Tensor:
        h = self.decoder(
            input_ids=ids, encoder_hidden_states=encoder_hidden, use_cache=True, **{_CACHE_ARG: cache}
        ).last_hidden_state[:, -1]
        logits = h @ self.decoder.embed_tokens.weight.T  # Whisper's output layer is its token table
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    @torch.no_grad()
    def forward(self, encoder_hidden: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
        """From Whisper's encoder output (clips, 1500, d): its language-ID distribution over its language tokens
        (clips, languages) and, per clip, the text tokens it decodes (no special tokens)."""
        n = encoder_hidden.shape[0]
        dev = encoder_hidden.device
        start = torch.full((n, 1), self.sot, device=dev)
        first = self._logits(start, encoder_hidden, None)
        language = torch.tensor(self.language_ids, device=dev)[first[:, self.language_ids].argmax(-1)]
        prompt = torch.stack(
            [
                start[:, 0],
                language,
                torch.full_like(language, self.transcribe),
                torch.full_like(language, self.no_timestamps),
            ],
            1,
        )
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        logits = self._logits(prompt, encoder_hidden, cache)
        vocab = logits.shape[-1]
        special = torch.zeros(vocab, dtype=torch.bool, device=dev)
        special[self.eot + 1 :] = True
        special[self.suppress] = True
        out = torch.empty((n, 0), dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for step in range(self.max_tokens):
            banned = special.clone()
            if step == 0:
                banned[self.suppress_begin] = True
            nxt = logits.masked_fill(banned, float("-inf")).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eot), nxt)
            done |= nxt == self.eot
            out = torch.cat([out, nxt[:, None]], 1)
            if bool(done.all()):
                break
            logits = self._logits(nxt[:, None], encoder_hidden, cache)
        return first[:, self.language_ids].softmax(-1), [[t for t in row.tolist() if t < self.eot] for row in out]


def transcriber_table(max_tokens: int = 48) -> dict:
    """Whisper base's token ids (start, end, transcribe, no-timestamps, its 99 languages) and the wheel's
    suppression lists: what a model's config stores so that transcription needs no wheel at load time."""
    from .parts import whisper_ct2_dir, whisper_language_table

    table = whisper_language_table()
    vocab = (whisper_ct2_dir() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    cfg = json.loads((whisper_ct2_dir() / "config.json").read_text())
    table.update(
        end_token_id=vocab.index("<|endoftext|>"),
        transcribe_token_id=vocab.index("<|transcribe|>"),
        no_timestamps_token_id=vocab.index("<|notimestamps|>"),
        suppress_ids=cfg["suppress_ids"],
        suppress_ids_begin=cfg["suppress_ids_begin"],
        max_tokens=max_tokens,
    )
    return table
