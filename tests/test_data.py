"""Data: SAKURA parsing, audio loading, and clear errors on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from patchlab.data import load_audio, load_track, parse_options, tone, tracks
from patchlab.errors import PatchlabError


def test_options_and_answers_parse():
    assert parse_options("Which one? (a) Female (b) Male") == ["Female", "Male"]
    assert parse_options("(a) sheep (b) cat (c) rooster (d) crow") == ["sheep", "cat", "rooster", "crow"]


def test_sakura_tracks_load(sakura):
    assert tracks(sakura) == ["Animal", "Emotion", "Gender", "Language"]
    for t in tracks(sakura):
        samples = load_track(sakura, t)
        assert len(samples) >= 148
        assert all(s.options[s.answer].lower() == s.label.lower() for s in samples)


def test_audio_is_mixed_to_mono_and_resampled(tmp_path):
    stereo = np.stack([tone(1.0, rate=44100), np.zeros(44100, np.float32)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 44100)
    wave = load_audio(tmp_path / "s.wav", 16000)
    assert wave.ndim == 1 and abs(wave.shape[0] - 16000) <= 1
    assert np.abs(wave).max() == pytest.approx(np.abs(tone(1.0)).max() / 2, rel=0.1)


def test_bad_audio_gets_clear_errors(tmp_path):
    with pytest.raises(PatchlabError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(PatchlabError, match="cannot be read"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(PatchlabError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(PatchlabError, match="longer than"):
        load_audio(tmp_path / "long.wav", max_seconds=2)


def test_bad_metadata_gets_clear_errors(toy_data, tmp_path):
    with pytest.raises(PatchlabError, match="track 'Nope' not found.*\n.*Gender"):
        load_track(toy_data, "Nope")
    bad = tmp_path / "Gender"
    bad.mkdir()
    (bad / "metadata.csv").write_text(
        "file,attribute_label,single_instruction,single_answer,multi_instruction,multi_answer\n"
        'a.wav,female,"Gender? (a) Female (b) Male",(c) Robot,x,x\n'
    )
    with pytest.raises(PatchlabError, match="line 2: answer '\\(c\\) Robot' is not among the options"):
        load_track(tmp_path, "Gender")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_speech_builder_writes_a_loadable_sakura_layout(tmp_path):
    from patchlab.data.speech import LANGUAGES, build_training_set, espeak

    root = build_training_set(tmp_path, per_language=2, per_animal=1, seed=0)
    gender, language = load_track(root, "Gender"), load_track(root, "Language")
    assert {s.label for s in language} == set(LANGUAGES) and len(language) == 2 * len(LANGUAGES)
    assert {s.label for s in gender} == {"female", "male"}
    assert all(s.options[s.answer].lower() == s.label.lower() for s in gender + language)
    assert load_audio(language[0].path).size > 16000 // 2
    # a female and a male variant of the same voice and text differ in pitch (median autocorrelation F0)
    f0 = {v: _f0(espeak("The weather is lovely today.", f"en-us+{v}", 50, 160)) for v in ("f3", "m3")}
    assert f0["f3"] > 1.4 * f0["m3"]


def _f0(x: np.ndarray, rate: int = 16000) -> float:
    frame, out = int(0.04 * rate), []
    for i in range(0, len(x) - frame, frame // 2):
        w = x[i : i + frame] * np.hanning(frame)
        if np.sqrt((w**2).mean()) < 0.02 * np.abs(x).max():
            continue
        ac = np.correlate(w, w, "full")[frame - 1 :]
        k = rate // 400 + int(np.argmax(ac[rate // 400 : rate // 60]))
        if ac[k] > 0.4 * ac[0]:
            out.append(rate / k)
    return float(np.median(out))
