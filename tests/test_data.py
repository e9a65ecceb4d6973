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


def test_median_f0_reads_the_pitch_of_a_harmonic_tone():
    from patchlab.data.speech import median_f0

    t = np.arange(16000) / 16000
    for f0 in (95.0, 130.0, 210.0, 280.0):
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)).astype(np.float32)
        assert abs(median_f0(x) - f0) < 0.03 * f0
    assert np.isnan(median_f0(np.zeros(16000, np.float32)))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_speech_builder_writes_a_loadable_sakura_layout(tmp_path):
    from patchlab.data.speech import HUMAN_SPEECH, LANGUAGES, build_training_set, espeak, median_f0

    human = any(root.exists() for root in HUMAN_SPEECH)
    root = build_training_set(tmp_path, per_language=2, per_animal=1, seed=0, per_gender=2 if human else 0)
    gender, language = load_track(root, "Gender"), load_track(root, "Language")
    assert {s.label for s in language} == set(LANGUAGES) and len(language) == 2 * len(LANGUAGES)
    assert {s.label for s in gender} == {"female", "male"}
    assert all(s.options[s.answer].lower() == s.label.lower() for s in gender + language)
    assert load_audio(language[0].path).size > 16000 // 2
    # a female and a male variant of the same voice and text differ in pitch
    f0 = {v: median_f0(espeak("The weather is lovely today.", f"en-us+{v}", 50, 160)) for v in ("f3", "m3")}
    assert f0["f3"] > 1.4 * f0["m3"]
    if human:  # human recordings join the Gender track only, labelled by their speaker's F0
        sources = (root / "SOURCES.tsv").read_text().splitlines()
        assert sum("\thuman " in line for line in sources) == 4
        assert all("Gender" in line and "Language" not in line for line in sources if "\thuman " in line)


def test_limit_is_a_seeded_stratified_sample_in_the_tracks_label_mix(tmp_path):
    """--limit N draws N clips at random within each label (seeded), keeping the label mix; not file order."""
    from collections import Counter

    from patchlab.data.sakura import stratified

    rows = [{"attribute_label": la} for la in ["english"] * 60 + ["german"] * 20 + ["french"] * 20]
    picked = stratified(rows, 10, seed=0)
    mix = Counter(r["attribute_label"] for _, r in picked)
    assert mix == {"english": 6, "german": 2, "french": 2} and len(picked) == 10
    assert [n for n, _ in picked] == sorted(n for n, _ in picked)  # in file order
    assert picked == stratified(rows, 10, seed=0) and picked != stratified(rows, 10, seed=1)
    assert [n for n, _ in picked][:6] != list(range(2, 8))  # not the first rows of the file
    # every label present while the limit allows, even a rare one
    rare = [{"attribute_label": la} for la in ["a"] * 98 + ["b"] * 2]
    assert Counter(r["attribute_label"] for _, r in stratified(rare, 5)) == {"a": 4, "b": 1}
    assert len(stratified(rows, None)) == len(stratified(rows, 500)) == 100


def test_label_space_chooses_the_tokens_the_lens_reads(qwen):
    """auto: ' female' after a direct prefix, 'Female' at a new turn; none (AudioLens): the option as written, no
    leading space, in every format; space: always a leading space. The label set reads each one's first token."""
    from patchlab.data import label_set, verbalize

    assert [verbalize("female", f) for f in ("direct", "mc")] == [" female", "Female"]
    assert [verbalize("female", f, "none") for f in ("direct", "mc")] == ["Female", "Female"]
    assert [verbalize("female", f, "space") for f in ("direct", "mc")] == [" female", " Female"]
    auto, none = label_set(qwen, ["female", "male"], "direct"), label_set(qwen, ["female", "male"], "direct", "none")
    assert auto.token_ids != none.token_ids
    assert none.token_ids == tuple(qwen.token_id(v) for v in ("Female", "Male"))
    with pytest.raises(PatchlabError, match="label_space"):
        verbalize("female", "mc", "nospace")
