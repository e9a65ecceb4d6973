"""AudioFlamingo3 (AudioFlamingo3ForConditionalGeneration): Whisper-style encoder + Qwen2 decoder."""

from __future__ import annotations

from typing import Any

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class AudioFlamingo3Adapter(Adapter):
    family = "audioflamingo3"
    model_class_name = "AudioFlamingo3ForConditionalGeneration"
    model_types = ("audioflamingo3",)
    description = "AudioFlamingo3: <sound> expanded to 25 tokens per second in 30 s windows"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<sound>")

    def chat_text(self, prompt: Prompt) -> str:
        return (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n<sound>{prompt.instruction}<|im_end|>\n<|im_start|>assistant\n{prompt.prefix}"
        )

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import (
            AudioFlamingo3Config,
            AudioFlamingo3ForConditionalGeneration,
            AudioFlamingo3Processor,
            WhisperFeatureExtractor,
        )

        cfg = AudioFlamingo3Config(
            audio_config=dict(TINY_WHISPER),
            text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
        )
        mark_random(cfg)
        AudioFlamingo3ForConditionalGeneration(cfg).save_pretrained(out_dir)
        AudioFlamingo3Processor(WhisperFeatureExtractor(feature_size=128), tokenizer).save_pretrained(out_dir)
