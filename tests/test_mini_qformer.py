"""patchlab-mini-qformer: its transcript region, Whisper's own transcription, the committed connector."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_parts

import patchlab
from patchlab.corrupt import make_pair
from patchlab.data import load_audio, load_track


@pytest.fixture(scope="module")
def tiny_q(tiny_dir):
    return patchlab.load(tiny_dir("patchlab_mini_qformer"))


def test_transcript_region_holds_exactly_the_transcription(tiny_q, sakura):
    """The transcript region is the tokens of Whisper's transcription, right after the queries; the text region
    does not hold them; the audio region is one position per query."""
    s = load_track(sakura, "Gender", limit=2)[0]
    wave = load_audio(s.path, 16000)
    batch = tiny_q.prepare(wave, 16000, "What is the speaker's gender?")
    r = batch.regions[0]
    words = tiny_q.adapter.transcribe(tiny_q, tiny_q.processor.features(wave, 16000))
    ids = batch.tensors["input_ids"][0]
    assert len(r.audio) == tiny_q.model.config.queries and r.audio == tuple(range(r.audio[0], r.audio[-1] + 1))
    assert words and r.transcript and r.transcript[0] == r.audio[-1] + 1
    assert tiny_q.tokenizer.decode(ids[list(r.transcript)]).strip() == words.strip()
    assert not set(r.transcript) & set(r.text)


def test_a_swapped_clip_keeps_positions_aligned(tiny_q, sakura):
    """A corrupted run on another clip (another transcription) is fitted to the clean run's token count."""
    samples = load_track(sakura, "Gender", limit=4)
    for s in samples[:2]:
        pair = make_pair(tiny_q, s, "swap", "mc", 0, pool=samples)
        assert pair.clean.regions[0].transcript == pair.corrupt.regions[0].transcript


@needs_parts
def test_whisper_transcribes_a_sakura_clip(sakura):
    """Whisper base's greedy transcription (decoded as CTranslate2 does, no timestamps) of a clear English clip."""
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    from patchlab.mini.parts import convert_parts
    from patchlab.mini.qformer_build import whisper_tokenizer
    from patchlab.mini.transcribe import WhisperTranscriber, transcriber_table

    parts = convert_parts()
    enc = WhisperEncoder.from_pretrained(parts / "whisper-encoder").eval()
    dec = WhisperDecoder.from_pretrained(parts / "whisper-decoder").eval()
    from transformers import WhisperFeatureExtractor

    s = load_track(sakura, "Gender", limit=8)[0]
    feats = WhisperFeatureExtractor(feature_size=80)(load_audio(s.path, 16000), sampling_rate=16000,
                                                      return_tensors="pt").input_features  # fmt: skip
    with torch.no_grad():
        language, tokens = WhisperTranscriber(dec, transcriber_table())(enc(feats).last_hidden_state)
    assert abs(float(language.sum()) - 1) < 1e-5 and int(language.argmax()) == 0  # English: Whisper's first language
    assert "alright" in whisper_tokenizer().decode(tokens[0]).lower()


@needs_parts
def test_committed_connector_hears_gender_and_language(sakura):
    """The real patchlab-mini-qformer (committed connector) answers SAKURA's gender and language questions well above
    chance: on these balanced subsets 19 of 24 gender clips (chance 50%) and 14 of 16 language clips (chance 25%);
    all clips 87.3% and 75.7% (MODEL_CARD_QFORMER.md). A connector ignoring the audio and the transcript would sit at
    chance (at least 17 of 24 by chance: p = 0.03; 11 of 16: p < 0.001); the bars leave two and three clips for CPU
    float drift."""
    from patchlab.answer import single_hop_accuracy

    lalm = patchlab.load("patchlab-mini-qformer")
    assert not lalm.is_random and lalm.family == "patchlab_mini_qformer"
    gender = single_hop_accuracy(lalm, sakura, ["Gender"], limit=24)
    language = single_hop_accuracy(lalm, sakura, ["Language"], limit=16)
    assert gender["correct"].sum() >= 17 and language["correct"].sum() >= 11


def test_transcription_is_decoded_once_per_clip(tiny_q, sakura, monkeypatch):
    """Preparing the same clip again reuses its transcription (one greedy decode), and gives the same inputs."""
    s = load_track(sakura, "Gender", limit=2)[1]
    wave = load_audio(s.path, 16000)
    first = tiny_q.prepare(wave, 16000, "What is the speaker's gender?")
    calls = []
    real = type(tiny_q.model.model).transcriber
    monkeypatch.setattr(type(tiny_q.model.model), "transcriber", lambda self: calls.append(1) or real(self))
    again = tiny_q.prepare(wave, 16000, "What is the speaker's gender? Answer in one word.")
    assert not calls and again.regions[0].transcript == first.regions[0].transcript
    assert torch.equal(again.tensors["input_features"], first.tensors["input_features"])


def test_attribute_heads_score_each_example_with_its_tracks_head(sakura):
    """The training-only attribute loss is each example's cross-entropy under its own track's head, from the mean of
    its clip's connector outputs; its gradient reaches the connector outputs (what it is there to shape)."""
    from patchlab.mini.train import AttributeHeads, Example

    samples = [s for t in ("Gender", "Language") for s in load_track(sakura, t, limit=4)]
    heads = AttributeHeads(6, samples)
    assert heads.labels["Gender"] == ["female", "male"] and len(heads.labels["Language"]) == 4
    batch = [Example(None, None, "", s.track, s.label) for s in samples]
    torch.manual_seed(0)
    outputs = torch.randn(len(batch), 5, 6, requires_grad=True)
    loss = heads.loss(outputs, batch)
    expected = [
        -torch.log_softmax(heads.heads[ex.track](outputs[i].mean(0)), -1)[heads.labels[ex.track].index(ex.label)]
        for i, ex in enumerate(batch)
    ]
    assert torch.allclose(loss, torch.stack(expected).mean())
    loss.backward()
    assert outputs.grad.abs().sum(-1).gt(0).all()
