"""Voxtral (VoxtralForConditionalGeneration): Whisper-style encoder, 4-frame stacking, Llama/Mistral decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, mark_random

AUDIO = "[AUDIO]"
TOKENS_PER_CHUNK = 375  # 30 s of audio -> 1500 encoder frames -> stacked by 4
CHUNK_SAMPLES = 480000  # 30 s at 16 kHz
MEL_FRAMES_PER_CHUNK = 3000


class VoxtralAdapter(Adapter):
    family = "voxtral"
    model_class_name = "VoxtralForConditionalGeneration"
    model_types = ("voxtral",)
    description = "Voxtral: audio padded to 30 s chunks, 375 audio tokens per chunk"
    special_tokens = ("<s>", "[INST]", "[/INST]", "[BEGIN_AUDIO]", AUDIO)
    tiny_eos = "</s>"
    max_seconds = None  # the processor splits long audio into 30 s chunks

    def chat_text(self, prompt: Prompt) -> str:
        return f"<s>[INST][BEGIN_AUDIO]{AUDIO}{prompt.instruction}[/INST]{prompt.prefix}"

    def process(self, processor: Any, text: str, audio: np.ndarray, sampling_rate: int) -> dict[str, torch.Tensor]:
        """Voxtral's audio layout: pad to a multiple of 30 s, one mel chunk and 375 [AUDIO] tokens per 30 s.

        A real Voxtral checkpoint's processor expands placeholders inside its mistral-common tokenizer;
        with that tokenizer we go through `processor.apply_chat_template`.
        """
        if type(processor.tokenizer).__name__ == "MistralCommonBackend":
            return self._mistral_process(processor, text, audio, sampling_rate)
        fe = processor.feature_extractor
        n_chunks = max(1, -(-audio.shape[0] // CHUNK_SAMPLES))
        # the keyword arguments VoxtralProcessor passes to its feature extractor
        feats = fe(
            audio,
            sampling_rate=sampling_rate,
            padding=True,
            truncation=False,
            pad_to_multiple_of=CHUNK_SAMPLES,
            return_tensors="pt",
        )["input_features"]
        feats = feats.reshape(fe.feature_size, -1, MEL_FRAMES_PER_CHUNK).transpose(0, 1)
        ids = processor.tokenizer(
            text.replace(AUDIO, AUDIO * (TOKENS_PER_CHUNK * n_chunks)), add_special_tokens=False, return_tensors="pt"
        )
        return {**ids, "input_features": feats}

    def _mistral_process(self, processor: Any, text: str, audio: np.ndarray, sampling_rate: int) -> dict:
        instruction, prefix = text.split(AUDIO, 1)[1].split("[/INST]", 1)
        conversation = [
            {"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": instruction}]}
        ]
        if prefix:
            conversation.append({"role": "assistant", "content": prefix})
        out = processor.apply_chat_template(conversation, continue_final_message=bool(prefix), return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

        cfg = VoxtralConfig(
            audio_config=dict(
                hidden_size=32,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_mel_bins=128,
                max_source_positions=1500,
                vocab_size=64,
            ),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), head_dim=16, **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO),
        )
        mark_random(cfg)
        VoxtralForConditionalGeneration(cfg).save_pretrained(out_dir)
        WhisperFeatureExtractor(feature_size=128).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)

    def processor_parts(self, path: str) -> Any:
        """Without mistral-common's tokenizer file: the feature extractor and tokenizer, laid out as Voxtral's."""
        return self.whisper_parts(path)
