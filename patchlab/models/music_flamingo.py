"""MusicFlamingo (MusicFlamingoForConditionalGeneration): AudioFlamingo3's encoder and layout, with rotary time
embeddings on the audio frames (`model.pos_emb`) and audio spans marked <|sound_bos|> ... <|sound_eos|>."""

from __future__ import annotations

from typing import Any

from .base import Adapter, TemplateChat
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random

TINY_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'audio' %}<sound>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class MusicFlamingoAdapter(TemplateChat, Adapter):
    family = "music_flamingo"
    model_class_name = "MusicFlamingoForConditionalGeneration"
    model_types = ("musicflamingo",)
    description = "MusicFlamingo: AudioFlamingo3 layout, rotary time embeddings on audio, <sound> in 30 s windows"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<sound>", "<|sound_bos|>", "<|sound_eos|>")
    max_seconds = None  # the processor windows long audio

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import (
            MusicFlamingoConfig,
            MusicFlamingoForConditionalGeneration,
            MusicFlamingoProcessor,
            WhisperFeatureExtractor,
        )

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        cfg = MusicFlamingoConfig(
            audio_config=dict(TINY_WHISPER, model_type="audioflamingo3_encoder"),
            text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=ids["<sound>"],
            audio_bos_token_id=ids["<|sound_bos|>"],
            audio_eos_token_id=ids["<|sound_eos|>"],
        )
        mark_random(cfg)
        MusicFlamingoForConditionalGeneration(cfg).save_pretrained(out_dir)
        MusicFlamingoProcessor(
            WhisperFeatureExtractor(feature_size=128), tokenizer, chat_template=TINY_TEMPLATE
        ).save_pretrained(out_dir)
