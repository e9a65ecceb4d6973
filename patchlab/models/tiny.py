"""Tiny random-weight checkpoints of each family, for shape and plumbing tests (always labelled random)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Words the tiny tokenizer learns whole, so label sets of every SAKURA track have distinct first tokens.
_LABEL_WORDS = (
    "female male English German Spanish French Italian Japanese Korean Chinese "
    "angry disgust fear happy sad dog cat frog cow sheep pig hen rooster crow"
).split()
_CORPUS = [
    "The speaker's gender is",
    "The language spoken is",
    "The speaker's emotion is",
    "The animal making this sound is a",
    "What is the speaker's gender? What language is spoken? What emotion? Which animal?",
    "Answer with one word. Select your choice from the following options. Listen to the audio clip.",
    "system user assistant You are a helpful assistant. Audio 1:",
]

TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)
TINY_WHISPER = dict(
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    num_mel_bins=128,
    max_source_positions=1500,
)


def tiny_tokenizer(special_tokens: tuple[str, ...], extra_attrs: dict[str, str], eos: str) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained here on prompt and label words, with the family's special tokens."""
    words = [w for label in _LABEL_WORDS for w in (label, " " + label, label.capitalize(), " " + label.capitalize())]
    corpus = _CORPUS * 20 + words * 40
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys([eos, *special_tokens]))
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, extra_special_tokens=extra_attrs)


def mark_random(config: Any) -> None:
    """Label a config as random-weight so every report can say so."""
    config.patchlab_random_weights = True
    config.patchlab_note = "tiny random-weight checkpoint made by `patchlab make-tiny`: for plumbing tests only"


def lalm_code_dir(folder: str, given: str | Path | None = None) -> Path:
    """Where the real code of a family that transformers does not ship lies (`--code`, `$PATCHLAB_LALM_CODE` or
    ../shared/lalm-code), for building its tiny checkpoints."""
    import os

    from ..errors import PatchlabError

    roots = [Path(given)] if given else [Path(os.environ.get("PATCHLAB_LALM_CODE", "../shared/lalm-code")) / folder]
    for root in roots:
        if root.is_dir():
            return root
    raise PatchlabError(
        f"no {folder} model code at {roots[0]}",
        f"pass --code DIR (a folder holding the family's real code, e.g. ../shared/lalm-code/{folder})",
    )
