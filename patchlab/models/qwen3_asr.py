"""Qwen3-ASR (Qwen3ASRForConditionalGeneration): windowed audio encoder into a Qwen3 decoder (tied embeddings)."""

from __future__ import annotations

from typing import Any

from .base import Adapter, TemplateChat
from .tiny import TINY_TEXT, mark_random

TINY_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'audio' %}"
    "<|audio_start|><|audio_pad|><|audio_end|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen3AsrAdapter(TemplateChat, Adapter):
    family = "qwen3_asr"
    model_class_name = "Qwen3ASRForConditionalGeneration"
    model_types = ("qwen3_asr",)
    description = "Qwen3-ASR: windowed Whisper-style encoder, <|audio_pad|> per frame, Qwen3 decoder (tied embeddings)"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>")
    extra_tokenizer_attrs = {
        "audio_token": "<|audio_pad|>",
        "audio_bos_token": "<|audio_start|>",
        "audio_eos_token": "<|audio_end|>",
    }
    max_seconds = None  # the encoder reads long audio window by window

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor
        from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor

        text = dict(TINY_TEXT, head_dim=16, tie_word_embeddings=True)
        cfg = Qwen3ASRConfig(
            audio_config=dict(
                d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128,
                output_dim=text["hidden_size"], downsample_hidden_size=16,
            ),
            text_config=dict(model_type="qwen3", vocab_size=len(tokenizer), **text),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )  # fmt: skip
        mark_random(cfg)
        Qwen3ASRForConditionalGeneration(cfg).save_pretrained(out_dir)
        Qwen3ASRProcessor(Qwen3ASRFeatureExtractor(), tokenizer, chat_template=TINY_TEMPLATE).save_pretrained(out_dir)
