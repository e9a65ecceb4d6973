"""GLM-ASR (GlmAsrForConditionalGeneration): Whisper-style encoder, 4x frame merge, Llama decoder."""

from __future__ import annotations

from typing import Any

from .base import Adapter, TemplateChat
from .tiny import TINY_TEXT, mark_random

# The tiny checkpoint's chat template, in GLM's turn format (<|user|> ... <|assistant|>) with the audio span
# <|begin_of_audio|><|pad|><|end_of_audio|> that GLM-ASR's processor expands; real checkpoints ship their own.
TINY_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{% for c in m.content %}{% if c.type == 'audio' %}"
    "<|begin_of_audio|><|pad|><|end_of_audio|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class GlmAsrAdapter(TemplateChat, Adapter):
    family = "glm_asr"
    model_class_name = "GlmAsrForConditionalGeneration"
    model_types = ("glmasr",)
    description = "GLM-ASR: Whisper-style encoder in 30 s windows, 4 frames merged per token, Llama decoder"
    special_tokens = ("<|user|>", "<|assistant|>", "<|system|>", "<|pad|>", "<|begin_of_audio|>", "<|end_of_audio|>")
    max_seconds = None  # the processor splits long audio into 30 s windows

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration, GlmAsrProcessor, WhisperFeatureExtractor

        cfg = GlmAsrConfig(
            audio_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_mel_bins=128
            ),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"),
            tie_word_embeddings=False,
        )
        mark_random(cfg)
        GlmAsrForConditionalGeneration(cfg).save_pretrained(out_dir)
        processor = GlmAsrProcessor(
            WhisperFeatureExtractor(feature_size=128), tokenizer, chat_template=TINY_TEMPLATE, audio_token="<|pad|>"
        )
        processor.save_pretrained(out_dir)
