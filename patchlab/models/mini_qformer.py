"""patchlab-mini-qformer (patchlab.mini.qformer): Whisper base tapped at several layers -> Q-Former (32 queries) ->
SmolLM2-135M-Instruct, with Whisper's own transcription of the clip after the audio (region `transcript`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..regions import Regions
from .base import Prompt
from .memo import input_key
from .mini import MiniAdapter
from .tiny import TINY_TEXT, TINY_WHISPER, mark_random
from .transcript import fit_transcript, transcript_tokens


class MiniQformerAdapter(MiniAdapter):
    family = "patchlab_mini_qformer"
    model_types = ("patchlab_mini_qformer",)
    audio_queries = 32
    description = (
        "patchlab-mini-qformer: Whisper base at 3 layers + trained Q-Former (32 queries) + SmolLM2-135M-Instruct, "
        "Whisper's transcription after the audio"
    )

    def model_class(self) -> type:
        from ..mini.qformer import PatchlabQformerForConditionalGeneration

        return PatchlabQformerForConditionalGeneration

    def load_processor(self, path: str) -> Any:
        from ..mini.processor import PatchlabQformerProcessor

        return PatchlabQformerProcessor.from_pretrained(path)

    def connector_output(self, model: Any) -> Any:
        return model.model.connector.proj

    def transcribe(self, lalm: Any, features: dict[str, torch.Tensor]) -> str:
        """Whisper's own greedy transcription of one clip, as text; kept for the last 64 distinct clips (a clip is
        prepared for its clean run, each pair, the lens and knockout: one greedy decode, not one per preparation)."""
        feats = features["input_features"].to(lalm.device, lalm.dtype)
        memo = lalm.__dict__.setdefault("_transcripts", OrderedDict())
        key = (input_key((feats,), {}), lalm.weights_version())
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
        model = lalm.model.model
        with torch.no_grad():
            _, last = model.tapped(feats)
            _, tokens = model.transcriber()(last)
        memo[key] = lalm.processor.whisper_tokenizer.decode(tokens[0], skip_special_tokens=True)
        while len(memo) > 64:
            memo.popitem(last=False)
        return memo[key]

    def prepare_inputs(
        self, lalm: Any, prompt: Prompt, audio: np.ndarray, sampling_rate: int, like: Regions | None = None
    ) -> tuple[dict[str, torch.Tensor], Regions]:
        proc = lalm.processor
        feats = proc.features(audio, sampling_rate)
        transcript = self.transcribe(lalm, feats)
        text, start = proc.expand(self.chat_text(prompt), transcript)
        ids = proc.tokenizer(text).input_ids
        heard, at = transcript_tokens(proc.tokenizer, text, start, transcript)
        if like is not None and len(heard) != len(like.transcript):
            ids, heard = fit_transcript(ids, heard, at, len(like.transcript), proc.tokenizer)
        regions = Regions.from_ids(torch.tensor(ids), lalm.audio_token_id, lalm._special)
        text_positions = tuple(p for p in regions.text if p not in heard)
        regions = Regions(regions.length, regions.audio, text_positions, regions.special, tuple(heard))
        return {"input_ids": torch.tensor([ids]), **feats}, regions

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        from transformers import WhisperFeatureExtractor

        from ..mini.processor import PatchlabQformerProcessor
        from ..mini.qformer import PatchlabQformerConfig, PatchlabQformerForConditionalGeneration

        whisper = dict(TINY_WHISPER, num_mel_bins=80, vocab_size=72, max_target_positions=16)
        whisper.update(decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
        whisper.update(pad_token_id=64, bos_token_id=64, eos_token_id=64, decoder_start_token_id=65)
        languages = [
            dict(token_id=66 + i, code=c, name=n) for i, (c, n) in enumerate([("en", "english"), ("de", "german")])
        ]
        transcriber = dict(  # a tiny Whisper vocabulary: text 0-63, end 64, start 65, languages, task tokens
            start_token_id=65,
            end_token_id=64,
            transcribe_token_id=69,
            no_timestamps_token_id=70,
            languages=languages,
            suppress_ids=[],
            suppress_ids_begin=[64],
            max_tokens=6,
        )
        cfg = PatchlabQformerConfig(
            audio_config=whisper,
            text_config=dict(vocab_size=len(tokenizer), **TINY_TEXT),
            audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
            tapped_layers=[1, 2],
            qformer_layers=1,
            qformer_ffn=64,
            transcriber=transcriber,
        )
        mark_random(cfg)
        PatchlabQformerForConditionalGeneration(cfg).save_pretrained(out_dir)
        PatchlabQformerProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer, tokenizer).save_pretrained(
            out_dir
        )
