"""Qwen2-Audio (Qwen2AudioForConditionalGeneration): Whisper-style encoder, pooled, into Qwen2."""

from __future__ import annotations

from typing import Any

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class Qwen2AudioAdapter(Adapter):
    family = "qwen2_audio"
    model_class_name = "Qwen2AudioForConditionalGeneration"
    model_types = ("qwen2_audio",)
    description = "Qwen2-Audio(-Instruct): 25 audio tokens per second, up to 750 (30 s)"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
    extra_tokenizer_attrs = {
        "audio_token": "<|AUDIO|>",
        "audio_bos_token": "<|audio_bos|>",
        "audio_eos_token": "<|audio_eos|>",
    }

    def chat_text(self, prompt: Prompt) -> str:
        return (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
            f"{prompt.instruction}<|im_end|>\n<|im_start|>assistant\n{prompt.prefix}"
        )

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import (
            Qwen2AudioConfig,
            Qwen2AudioForConditionalGeneration,
            Qwen2AudioProcessor,
            WhisperFeatureExtractor,
        )

        cfg = Qwen2AudioConfig(
            audio_config=dict(TINY_WHISPER),
            text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
        )
        mark_random(cfg)
        Qwen2AudioForConditionalGeneration(cfg).save_pretrained(out_dir)
        Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=128), tokenizer).save_pretrained(out_dir)
