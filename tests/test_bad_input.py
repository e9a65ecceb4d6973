"""The bad-input matrix: each bad input gets a clear error (what and fix) or a documented skip with a warning row."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import needs_parts

import patchlab
from patchlab.data import load_audio, load_track
from patchlab.data.synth import HEADER, tone
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict
from patchlab.models.base import Prompt
from patchlab.runner import run


def _track(root, rows, files):
    (root / "Gender" / "audio").mkdir(parents=True)
    for name, write in files.items():
        write(root / "Gender" / "audio" / name)
    (root / "Gender" / "metadata.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def _row(name, label):
    answer = "(a) Female" if label == "female" else "(b) Male"
    return f'{name},{label},"Gender? (a) Female (b) Male",{answer},-,-'


def test_missing_audio_file(tmp_path):
    with pytest.raises(PatchlabError, match="does not exist") as e:
        load_audio(tmp_path / "gone.wav")
    assert "metadata.csv" in e.value.fix


def test_unreadable_audio_file(tmp_path):
    (tmp_path / "junk.flac").write_bytes(b"\x00garbage")
    with pytest.raises(PatchlabError, match="cannot be read") as e:
        load_audio(tmp_path / "junk.flac")
    assert "re-encode" in e.value.fix


def test_empty_clip(tmp_path):
    sf.write(tmp_path / "e.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(PatchlabError, match="empty"):
        load_audio(tmp_path / "e.wav")


def test_clip_longer_than_the_model_window(qwen):
    with pytest.raises(PatchlabError, match="longer than qwen2_audio's 30 s window") as e:
        qwen.prepare(np.zeros(16000 * 31, np.float32), 16000, Prompt("?"))
    assert "trim" in e.value.fix


def test_sample_rate_other_than_the_processor(qwen):
    with pytest.raises(PatchlabError, match="44100 Hz given to a processor that expects 16000 Hz") as e:
        qwen.prepare(tone(1.0, rate=44100), 44100, Prompt("?"))
    assert "load_audio" in e.value.fix


def test_multichannel_file_is_mixed_with_a_warning(tmp_path):
    sf.write(tmp_path / "st.wav", np.stack([tone(1.0), tone(1.0)], 1), 16000)
    with pytest.warns(UserWarning, match="2 channels: mixed to mono"):
        wave = load_audio(tmp_path / "st.wav")
    assert wave.ndim == 1


def test_answer_not_among_options(tmp_path):
    _track(tmp_path, ['a.wav,female,"Gender? (a) Female (b) Male",(c) Robot,-,-'], {})
    with pytest.raises(PatchlabError, match="answer '\\(c\\) Robot' is not among the options"):
        load_track(tmp_path, "Gender")


def test_label_first_subtokens_collide(qwen):
    from patchlab.data import label_set

    with pytest.raises(PatchlabError, match="share their first sub-token"):
        label_set(qwen, ["female", "femalex"], "direct")


def test_misaligned_clean_and_corrupted_regions(qwen):
    a = qwen.prepare(tone(1.0), 16000, Prompt("?")).regions[0]
    b = qwen.prepare(tone(2.0), 16000, Prompt("?")).regions[0]
    with pytest.raises(PatchlabError, match="do not line up: length"):
        a.check_aligned(b)


def test_config_with_an_unknown_key():
    with pytest.raises(PatchlabError, match=r"unknown key\(s\) \['sead'\]") as e:
        from_dict({"name": "x", "sead": 1}, "exp.yaml")
    assert "allowed keys" in e.value.fix


def test_model_directory_of_an_unknown_family(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(PatchlabError, match="model_type 'bert' is not a family patchlab knows"):
        patchlab.load(tmp_path)


def test_nan_in_activations_names_the_layer(qwen):
    batch = qwen.prepare(tone(1.0), 16000, Prompt("?"), id="clip7")

    def overflow(mod, args, out):  # what a float16 overflow looks like: inf from layer 2 on
        return out * float("inf")

    h = qwen.layers[2].mlp.register_forward_hook(overflow)
    try:
        with pytest.raises(PatchlabError, match="NaN/inf in the activations of clip7 from layer 2") as e:
            patchlab.record(qwen, batch, ["resid_post"])
    finally:
        h.remove()
    assert "weights" in e.value.fix  # float32: the cause is not half precision


def test_a_clip_that_is_not_audio_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    """Every planned clip's header is read before the model loads: a file that is not audio stops the run at once,
    naming the clip by its path in the track, and nothing is written."""
    files = {f"c{i}.wav": (lambda p, i=i: sf.write(p, tone(1.0, 240 if i % 2 else 110), 16000)) for i in range(2)}
    files["bad.wav"] = lambda p: p.write_bytes(b"not audio")
    rows = [_row("c0.wav", "male"), _row("bad.wav", "male"), _row("c1.wav", "female")]
    data = _track(tmp_path / "d", rows, files)
    exp = from_dict(dict(name="t", model=str(tiny_dir("qwen2_audio")), data=str(data), analyses=["lens"]), "t")
    with pytest.raises(PatchlabError, match=r"1 clip\(s\) cannot be read as audio: Gender/bad.wav"):
        run(exp, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_clip_whose_samples_break_in_a_run_becomes_a_warning_row(tiny_dir, tmp_path):
    """A clip whose header is fine but whose samples are not (NaN in a float WAV) is found only when read: the run
    keeps going, the others are analysed, the broken one is a `skipped` row."""
    files = {
        f"c{i}.wav": (lambda p, i=i: sf.write(p, tone(1.0 + 0.1 * i, 240 if i % 2 else 110), 16000)) for i in range(4)
    }
    files["bad.wav"] = lambda p: sf.write(p, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    rows = [_row(f"c{i}.wav", "female" if i % 2 else "male") for i in range(4)] + [_row("bad.wav", "male")]
    data = _track(tmp_path / "d", rows[:2] + [rows[4]] + rows[2:4], files)
    exp = from_dict(dict(name="t", model=str(tiny_dir("qwen2_audio")), data=str(data), analyses=["lens"]), "t")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run(exp, tmp_path / "out", progress=False)
    assert any("skipping Gender/bad.wav" in str(w.message) for w in caught)
    skipped = pd.read_csv(tmp_path / "out" / "tables" / "skipped.csv")
    assert skipped["sample"].tolist() == ["bad.wav"] and "NaN" in skipped["error"][0]
    assert summary["skipped"][0]["sample"] == "bad.wav"
    lens = pd.read_csv(tmp_path / "out" / "tables" / "lens_per_sample.csv")
    assert sorted(lens["sample"].unique()) == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]
    assert torch.isfinite(torch.tensor(lens["correct"].to_numpy())).all()


def test_a_mistyped_model_in_models_or_variant_is_refused_before_any_work(toy_data, tmp_path):
    """A typo in the second of several models, or in a variant, is refused before the output folder is made (not
    after the first model's whole run)."""
    out = tmp_path / "out"
    with pytest.raises(PatchlabError, match="'patchlab-mini-qfomer' in `models`"):
        run(from_dict(dict(name="t", models=["patchlab-mini", "patchlab-mini-qfomer"], data=str(toy_data)), "t"), out)
    with pytest.raises(PatchlabError, match="unknown model variant 'blokced:3'"):
        run(from_dict(dict(name="t", variant="blokced:3", data=str(toy_data)), "t"), out)
    assert not out.exists()


@needs_parts
def test_labels_sharing_a_first_token_are_refused_before_the_run_writes(tmp_path):
    """A track whose labels share their first token in a format the run reads (cow, crow in `mc`) is refused on
    the loaded model before any shard or the output folder is written, naming the track (not at its first shard,
    after the tracks before it ran)."""
    root = tmp_path / "data"
    audio = root / "Animal" / "audio"
    audio.mkdir(parents=True)
    rows = [HEADER]
    for i, label in enumerate(["cow", "crow", "cow", "crow"]):
        sf.write(audio / f"a{i}.wav", tone(1.0, 200 + 40 * i, seed=i), 16000)
        answer = "(a) Cow" if label == "cow" else "(b) Crow"
        rows.append(f'a{i}.wav,{label},"Which animal? (a) Cow (b) Crow",{answer},-,-')
    (root / "Animal" / "metadata.csv").write_text("\n".join(rows) + "\n")
    exp = from_dict({"name": "t", "model": "patchlab-mini", "data": str(root), "tracks": ["Animal"],
                     "analyses": ["lens"], "prompt": "mc", "formats": ["mc"]}, "t")  # fmt: skip
    with pytest.raises(PatchlabError, match="track Animal: labels 'cow' and 'crow' share their first sub-token"):
        run(exp, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
