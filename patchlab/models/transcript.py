"""The `transcript` region, shared by every family that writes an ASR front end's transcription of the clip into its
prompt (DeSTA2, patchlab-mini-qformer): which tokens hold it, and how a paired run's transcription is fitted to the
clean run's token count so positions line up."""

from __future__ import annotations

from typing import Any


def transcript_tokens(tokenizer: Any, text: str, start: int, transcript: str) -> tuple[list[int], int]:
    """Indices of the tokens of `text` (tokenized as the model's processor does) whose characters fall in the
    transcript written at character `start`, and the index of the first token at or after `start` (where an empty
    transcript would begin)."""
    spans = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    end = start + len(transcript)
    heard = [i for i, (a, b) in enumerate(spans) if b > a and a < end and b > start]
    at = heard[0] if heard else next(i for i, (a, b) in enumerate(spans) if b > a and a >= start)
    return heard, at


def fit_transcript(ids: list[int], heard: list[int], at: int, n: int, tokenizer: Any) -> tuple[list[int], list[int]]:
    """A paired (corrupted) run's transcription (its tokens `heard`, starting at `at`) cut or padded with '.' to `n`
    tokens, so its positions line up with the clean run's: the words differ, the token count does not."""
    filler = tokenizer(".", add_special_tokens=False).input_ids[-1]
    words = [ids[i] for i in heard][:n]
    words += [filler] * (n - len(words))
    rest = ids[heard[-1] + 1 :] if heard else ids[at:]
    return ids[:at] + words + rest, list(range(at, at + n))
