"""patchlab-mini (patchlab.mini): Whisper base encoder -> stacked frames -> MLP projector -> SmolLM2-135M-Instruct,
plus a language-ID audio token from Whisper's decoder."""

from __future__ import annotations

from typing import Any

from .base import Adapter, Prompt
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random


class MiniAdapter(Adapter):
    family = "patchlab_mini"
    model_types = ("patchlab_mini",)
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|AUDIO|>")
    tiny_eos = "<|endoftext|>"
    description = (
        "patchlab-mini: Whisper base + trained projector + SmolLM2-135M-Instruct, 12.5 audio tokens/s "
        "+ 1 language-ID token"
    )

    def model_class(self) -> type:
        from ..mini.modeling import PatchlabMiniForConditionalGeneration

        return PatchlabMiniForConditionalGeneration

    def load_processor(self, path: str) -> Any:
        from ..mini.processor import PatchlabMiniProcessor

        return PatchlabMiniProcessor.from_pretrained(path)

    def connector_output(self, model: Any) -> Any:
        return model.model.multi_modal_projector.linear_2

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

        whisper = dict(TINY_WHISPER, num_mel_bins=80, vocab_size=16, max_target_positions=8)
        whisper.update(decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
        whisper.update(pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
        cfg = PatchlabMiniConfig(
            audio_config=whisper,
            text_config=dict(vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
            language_token_ids=[4, 5, 6],  # a tiny Whisper vocabulary: start token 3, three "languages"
            start_token_id=3,
        )
        mark_random(cfg)
        PatchlabMiniForConditionalGeneration(cfg).save_pretrained(out_dir)
        processor = PatchlabMiniProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer, language_token=True)
        processor.save_pretrained(out_dir)
