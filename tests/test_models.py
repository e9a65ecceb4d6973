"""Wrappers: every family loads from a tiny local checkpoint, forwards unchanged by hooks, and maps regions right."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES

import patchlab
from patchlab.corrupt import decoder_inputs
from patchlab.data import tone
from patchlab.hooks import hooked
from patchlab.vocabulary import RECORD_SITES


def _inputs(lalm, seconds):
    if lalm.family == "granite_speech":  # its feature extractor needs torchaudio: feed features directly
        return lalm.adapter.feature_batch(lalm, seconds, patchlab.Prompt("What is the speaker's gender?"))
    return lalm.prepare(tone(seconds), 16000, "What is the speaker's gender?")


@pytest.mark.parametrize("family", FAMILIES)
def test_wrapper_forward_equals_plain_forward_and_audio_region_matches_scatter(family, tiny_dir):
    lalm = patchlab.load(tiny_dir(family))
    assert lalm.is_random and lalm.family == family
    lengths = (1.0, 31.0) if family == "voxtral" else (1.0, 2.3)  # Voxtral pads to 30 s chunks
    seen = set()
    for seconds in lengths:
        batch = _inputs(lalm, seconds)
        inputs = batch.to(lalm.device).tensors
        with torch.no_grad():
            plain = lalm.model(**inputs, use_cache=False).logits
            reads = {(s, la): (lambda x: None) for s in RECORD_SITES for la in range(lalm.n_layers)}
            with hooked(lalm, reads=reads):
                wrapped = lalm.forward(batch)
        assert (plain - wrapped).abs().max() <= 1e-5
        # positions whose decoder input differs from the placeholder token's embedding = scattered audio
        embeds = decoder_inputs(lalm, batch)[0]
        table = lalm.model.get_input_embeddings()(inputs["input_ids"])[0]
        scattered = (embeds != table).any(-1).nonzero().flatten().tolist()
        regions = batch.regions[0]
        assert scattered == list(regions.audio)
        assert regions.final == (regions.length - 1,)
        parts = [set(regions.audio), set(regions.text), set(regions.special), set(regions.final)]
        assert set().union(*parts) == set(range(regions.length)) and sum(map(len, parts)) == regions.length
        seen.add(len(regions.audio))
    assert len(seen) == 2, "two clip lengths should give two audio-region lengths"


def test_unknown_family_and_bad_directory_get_clear_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(patchlab.PatchlabError, match="qwen2_audio.*voxtral|not a family patchlab knows"):
        patchlab.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(patchlab.PatchlabError, match="no config.json"):
        patchlab.load(empty)
    with pytest.raises(patchlab.PatchlabError, match="unknown model family 'nope'"):
        patchlab.make_tiny("nope", tmp_path / "x")


def test_prepare_refuses_wrong_rate_and_empty_audio(qwen):
    with pytest.raises(patchlab.PatchlabError, match="44100 Hz.*16000 Hz"):
        qwen.prepare(tone(1.0, rate=44100), 44100, "hi")
    with pytest.raises(patchlab.PatchlabError, match="non-empty mono"):
        qwen.prepare(tone(0.0), 16000, "hi")


def test_granite_audio_prep_without_torchaudio_says_what_to_install(tiny_dir):
    from transformers.utils import is_torchaudio_available

    if is_torchaudio_available():
        pytest.skip("torchaudio is importable here, so Granite's real feature extractor runs")
    lalm = patchlab.load(tiny_dir("granite_speech"))
    with pytest.raises(patchlab.PatchlabError, match="torchaudio"):
        lalm.prepare(tone(1.0), 16000, "hi")


def test_audio_encoder_output_is_served_once_per_input_and_equals_a_fresh_run(qwen):
    """The memo returns what the encoder computes for the same input; other inputs, gradients and `fresh` run it."""
    calls, memo = [], qwen.encoder_memo
    compute = memo.compute

    def counted(*args, **kwargs):
        calls.append(1)
        return compute(*args, **kwargs)

    memo.compute = counted
    try:
        a, b = (qwen.prepare(tone(s), 16000, "What?") for s in (1.07, 1.31))  # inputs no other test uses
        first = qwen.forward(a)
        again = qwen.forward(a)
        assert len(calls) == 1 and torch.equal(first, again)
        with qwen.encoder_memo.fresh():
            fresh = qwen.forward(a)
        assert len(calls) == 2 and torch.equal(first, fresh)
        qwen.forward(b)
        assert len(calls) == 3
        with torch.enable_grad():
            qwen.model(**a.to(qwen.device).tensors, use_cache=False)
        assert len(calls) == 4
    finally:
        memo.compute = compute
