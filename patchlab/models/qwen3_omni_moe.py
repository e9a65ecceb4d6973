"""Qwen3-Omni-MoE Thinker (Qwen3OmniMoeThinkerForConditionalGeneration): audio encoder into a Qwen3 MoE decoder
with 3-D rotary positions.

`mlp_out` is the output of the layer's sparse MoE block: the router-weighted sum of the experts each token was
routed to (what the residual stream receives), not one expert's output.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Prompt
from .qwen2_5_omni import Qwen25OmniAdapter
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class Qwen3OmniMoeAdapter(Qwen25OmniAdapter):
    """Qwen2.5-Omni's audio path (processor parts without torchvision) with Qwen3-Omni's tokens and lengths."""

    family = "qwen3_omni_moe"
    model_class_name = "Qwen3OmniMoeThinkerForConditionalGeneration"
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    description = "Qwen3-Omni-MoE Thinker (audio in, text out): MoE decoder (mlp_out = routed sum), 3-D rotary"
    special_tokens = (
        "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>",
        "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
    )  # fmt: skip
    extra_tokenizer_attrs = {
        "audio_token": "<|audio_pad|>",
        "audio_bos_token": "<|audio_start|>",
        "audio_eos_token": "<|audio_end|>",
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    }
    max_seconds = None  # the encoder reads long audio window by window

    def chat_text(self, prompt: Prompt) -> str:
        return (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>{prompt.instruction}<|im_end|>\n"
            f"<|im_start|>assistant\n{prompt.prefix}"
        )

    feature_kwargs = {"padding": True, "truncation": False}  # Qwen3OmniMoeProcessor.audio_kwargs

    def audio_tokens(self, feature_mask: torch.Tensor) -> int:
        from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths

        return int(_get_feat_extract_output_lengths(feature_mask.sum(-1), 50)[0])

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import (
            Qwen3OmniMoeThinkerConfig,
            Qwen3OmniMoeThinkerForConditionalGeneration,
            WhisperFeatureExtractor,
        )

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        text = dict(
            TINY_TEXT,
            vocab_size=len(tokenizer),
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        )
        cfg = Qwen3OmniMoeThinkerConfig(
            audio_config=dict(TINY_WHISPER, output_dim=TINY_TEXT["hidden_size"], downsample_hidden_size=16),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64),
            text_config=text,
            audio_token_id=ids["<|audio_pad|>"],
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            audio_start_token_id=ids["<|audio_start|>"],
            user_token_id=tokenizer.convert_tokens_to_ids("user"),
            vision_start_token_id=ids["<|vision_start|>"],
        )
        mark_random(cfg)
        Qwen3OmniMoeThinkerForConditionalGeneration(cfg).save_pretrained(out_dir)
        WhisperFeatureExtractor(feature_size=128).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
