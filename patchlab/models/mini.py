"""patchlab-mini (patchlab.mini): Whisper base encoder -> stacked frames -> MLP projector -> SmolLM2-135M-Instruct."""

from __future__ import annotations

from typing import Any

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class MiniAdapter(Adapter):
    family = "patchlab_mini"
    model_types = ("patchlab_mini",)
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|AUDIO|>")
    tiny_eos = "<|endoftext|>"
    description = "patchlab-mini: Whisper base + trained projector + SmolLM2-135M-Instruct, 12.5 audio tokens/s"

    def model_class(self) -> type:
        from ..mini.modeling import PatchlabMiniForConditionalGeneration

        return PatchlabMiniForConditionalGeneration

    def load_processor(self, path: str) -> Any:
        from ..mini.processor import PatchlabMiniProcessor

        return PatchlabMiniProcessor.from_pretrained(path)

    def chat_text(self, prompt: Prompt) -> str:
        return (
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            f"<|im_start|>user\nAudio: <|AUDIO|>\n{prompt.instruction}<|im_end|>\n"
            f"<|im_start|>assistant\n{prompt.prefix}"
        )

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import WhisperFeatureExtractor

        from ..mini.modeling import PatchlabMiniConfig, PatchlabMiniForConditionalGeneration
        from ..mini.processor import PatchlabMiniProcessor

        cfg = PatchlabMiniConfig(
            audio_config=dict(TINY_WHISPER, num_mel_bins=80),
            text_config=dict(vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
        )
        mark_random(cfg)
        PatchlabMiniForConditionalGeneration(cfg).save_pretrained(out_dir)
        PatchlabMiniProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(out_dir)
