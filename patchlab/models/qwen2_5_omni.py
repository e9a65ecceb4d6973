"""Qwen2.5-Omni Thinker (Qwen2_5OmniThinkerForConditionalGeneration): audio encoder + Qwen2 with M-RoPE."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class Qwen25OmniAdapter(Adapter):
    family = "qwen2_5_omni"
    model_class_name = "Qwen2_5OmniThinkerForConditionalGeneration"
    model_types = ("qwen2_5_omni_thinker", "qwen2_5_omni")
    description = "Qwen2.5-Omni Thinker (audio in, text out): 25 audio tokens per second, 3-D rotary positions"
    special_tokens = (
        "<|im_start|>",
        "<|im_end|>",
        "<|AUDIO|>",
        "<|audio_bos|>",
        "<|audio_eos|>",
        "<|IMAGE|>",
        "<|VIDEO|>",
        "<|vision_bos|>",
        "<|vision_eos|>",
    )
    extra_tokenizer_attrs = {
        "audio_token": "<|AUDIO|>",
        "audio_bos_token": "<|audio_bos|>",
        "audio_eos_token": "<|audio_eos|>",
        "image_token": "<|IMAGE|>",
        "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>",
        "vision_eos_token": "<|vision_eos|>",
    }

    def chat_text(self, prompt: Prompt) -> str:
        return (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>{prompt.instruction}<|im_end|>\n"
            f"<|im_start|>assistant\n{prompt.prefix}"
        )

    def processor_parts(self, path: str) -> Any:
        """Qwen2_5OmniProcessor needs torchvision for its video part; audio needs only these parts, used
        below exactly as the processor uses them."""
        return self.whisper_parts(path)

    feature_kwargs: dict = {"padding": "max_length"}  # how the processor's _process_audio calls the extractor

    def audio_tokens(self, feature_mask: torch.Tensor) -> int:
        """Audio placeholders for one clip, from its feature mask (transformers' own length formula)."""
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

        return int(_get_feat_extract_output_lengths(feature_mask.sum(-1))[0])

    def process(self, processor: Any, text: str, audio: np.ndarray, sampling_rate: int) -> dict[str, torch.Tensor]:
        if not isinstance(processor, SimpleNamespace):
            return super().process(processor, text, audio, sampling_rate)
        feats = processor.feature_extractor(
            audio, sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt", **self.feature_kwargs
        )
        mask = feats.pop("attention_mask")
        tok = processor.tokenizer
        ids = tok(text.replace(tok.audio_token, tok.audio_token * self.audio_tokens(mask)), return_tensors="pt")
        return {**ids, "input_features": feats["input_features"], "feature_attention_mask": mask}

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import (
            Qwen2_5OmniThinkerConfig,
            Qwen2_5OmniThinkerForConditionalGeneration,
            WhisperFeatureExtractor,
        )

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        text = dict(
            TINY_TEXT,
            vocab_size=len(tokenizer),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        )
        cfg = Qwen2_5OmniThinkerConfig(
            audio_config=dict(TINY_WHISPER, output_dim=64, n_window=100),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64),
            text_config=text,
            audio_token_index=ids["<|AUDIO|>"],
            image_token_index=ids["<|IMAGE|>"],
            video_token_index=ids["<|VIDEO|>"],
            audio_start_token_id=ids["<|audio_bos|>"],
            audio_end_token_id=ids["<|audio_eos|>"],
            user_token_id=tokenizer.convert_tokens_to_ids("user"),
            vision_start_token_id=ids["<|vision_bos|>"],
            vision_end_token_id=ids["<|vision_eos|>"],
        )
        mark_random(cfg)
        Qwen2_5OmniThinkerForConditionalGeneration(cfg).save_pretrained(out_dir)
        WhisperFeatureExtractor(feature_size=128).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
