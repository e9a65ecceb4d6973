"""GraniteSpeech (GraniteSpeechForConditionalGeneration): Conformer encoder, Q-Former projector, Granite LM."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import PatchlabError
from .base import Adapter, Prompt
from .tiny import TINY_TEXT, mark_random


class GraniteSpeechAdapter(Adapter):
    family = "granite_speech"
    model_class_name = "GraniteSpeechForConditionalGeneration"
    model_types = ("granite_speech",)
    description = "Granite Speech: Conformer + windowed Q-Former; Granite LM with scaled residuals"
    # No logits_scale: GraniteSpeechForConditionalGeneration applies its own lm_head without dividing by the text
    # config's logits_scaling (GraniteForCausalLM does divide); `patchlab check` caught the lens disagreeing.
    special_tokens = ("<|start_of_role|>", "<|end_of_role|>", "<|audio|>")
    tiny_eos = "<|end_of_text|>"

    def chat_text(self, prompt: Prompt) -> str:
        return (
            f"<|start_of_role|>user<|end_of_role|><|audio|>{prompt.instruction}<|end_of_text|>\n"
            f"<|start_of_role|>assistant<|end_of_role|>{prompt.prefix}"
        )

    def process(self, processor: Any, text: str, audio: np.ndarray, sampling_rate: int) -> dict[str, torch.Tensor]:
        from transformers.utils import is_torchaudio_available

        if not is_torchaudio_available():
            raise PatchlabError(
                "GraniteSpeech's feature extractor needs torchaudio, which is not importable here",
                "install the torchaudio build that matches your torch (there is none for torch 2.13 on CPU)",
            )
        out = processor(text=text, audio=torch.as_tensor(audio), return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def feature_batch(self, lalm, seconds: float, prompt: Prompt, seed: int = 0):
        """Random 160-dim features (50 frames per second) with the prompt expanded to the encoder's output length:
        what the processor would hand the model, without torchaudio's mel spectrogram."""
        from ..regions import Regions
        from .base import Batch

        feats = torch.randn(1, int(seconds * 50), 160, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            n = lalm.model.get_audio_features(feats.to(lalm.device, lalm.dtype)).pooler_output.shape[1]
        text = self.chat_text(prompt).replace("<|audio|>", "<|audio|>" * n)
        ids = lalm.tokenizer(text, return_tensors="pt")
        regions = Regions.from_ids(ids["input_ids"][0], lalm.audio_token_id, lalm._special)
        return Batch({**ids, "input_features": feats}, [regions], [{"id": f"features-{seconds}s"}])

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

        cfg = GraniteSpeechConfig(
            text_config=dict(
                model_type="granite",
                vocab_size=len(tokenizer),
                residual_multiplier=0.5,
                embedding_multiplier=4.0,
                logits_scaling=2.0,
                **TINY_TEXT,
            ),
            encoder_config=dict(
                input_dim=160,
                num_layers=2,
                hidden_dim=32,
                feedforward_mult=2,
                num_heads=2,
                output_dim=16,
                context_size=20,
                max_pos_emb=64,
            ),
            projector_config=dict(
                model_type="blip_2_qformer",
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                encoder_hidden_size=32,
            ),
            audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"),
            has_lora_adapter=False,
        )
        mark_random(cfg)
        GraniteSpeechForConditionalGeneration(cfg).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        try:
            from transformers import GraniteSpeechFeatureExtractor, GraniteSpeechProcessor

            GraniteSpeechProcessor(GraniteSpeechFeatureExtractor(), tokenizer).save_pretrained(out_dir)
        except ImportError:  # torchaudio missing: the checkpoint still loads; audio prep says what to install
            pass

    def processor_parts(self, path: str) -> Any:
        """Without torchaudio the processor cannot be built: keep the tokenizer; audio prep says what to install."""
        from types import SimpleNamespace

        from transformers import AutoTokenizer

        return SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=False))
