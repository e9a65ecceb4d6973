"""A tiny random-weight DeSTA2 checkpoint in the layout the `desta` package loads: config.json naming Whisper and
Llama by id, `openai/whisper-tiny/` and `llama/` beside it (resolved against the checkpoint folder), and
`qformer_connector.pth` from the package's own QformerConnector."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .tiny import TINY_TEXT, mark_random

WHISPER_ID = "openai/whisper-tiny"  # DeSTA2 taps encoder layers [0, 1, 2, 3] of this id
LLAMA_DIR = "llama"
_WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def _whisper(out: Path) -> None:
    """A 4-layer Whisper of width 32 with a small byte-level vocabulary; greedy decoding writes up to 16 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(["the speaker says a few words in english"] * 50, trainer)
    # special tokens after the text vocabulary, <|notimestamps|> last: Whisper's generate takes every id above it for
    # a timestamp, as in the real vocabulary
    bpe.add_special_tokens(_WHISPER_SPECIALS)
    eot = "<|endoftext|>"
    tok = WhisperTokenizerFast(tokenizer_object=bpe, unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot)
    ids = {s: tok.convert_tokens_to_ids(s) for s in _WHISPER_SPECIALS}
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=4,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=16,
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
        eos_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    mark_random(cfg)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        max_length=16,
        suppress_tokens=[ids[s] for s in _WHISPER_SPECIALS[1:]],
        begin_suppress_tokens=[ids[eot]],  # a transcription of at least one word
        no_timestamps_token_id=ids["<|notimestamps|>"],
    )
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(out)


def _llama(tokenizer: Any, out: Path, template: str) -> None:
    """A 4-layer Llama of width 64 with a tokenizer that, like Llama 3's, adds <|begin_of_text|> itself."""
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM

    bos = "<|begin_of_text|>"
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))]
    )
    tokenizer.bos_token = bos
    tokenizer.chat_template = template
    cfg = LlamaConfig(vocab_size=len(tokenizer), **TINY_TEXT)
    cfg.bos_token_id = tokenizer.convert_tokens_to_ids(bos)
    cfg.eos_token_id = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    mark_random(cfg)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_tiny(tokenizer: Any, out: Path, template: str, pkg: Any, inside: Callable) -> None:
    """Write the checkpoint with the `desta` package `pkg` (the connector is the package's own class; `inside(path)`
    runs the package where it resolves its model ids)."""
    _whisper(out / WHISPER_ID)
    _llama(tokenizer, out / LLAMA_DIR, template)
    config = {
        "model_type": "DestaModel",
        "architectures": ["DestaModel"],
        "llama_model_id": LLAMA_DIR,
        "whisper_model_id": WHISPER_ID,
        "prompt_size": 64,
        "patchlab_random_weights": True,
        "patchlab_note": "tiny random-weight checkpoint made by `patchlab make-tiny`: for plumbing tests only",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    with inside(out.resolve()):
        cfg = pkg.Desta2Config.from_pretrained(".")
        connector = pkg.QformerConnector(cfg)
    torch.save(connector.state_dict(), out / "qformer_connector.pth")
