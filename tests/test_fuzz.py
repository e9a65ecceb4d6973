"""Fuzzing the inputs a user hands patchlab (metadata rows, configs, YAML text, audio file contents): the result is
correct or a PatchlabError naming the input; never another exception, never a silently changed table.

Example counts (FUZZ_EXAMPLES, default 150 per test) and what the fuzzing found are in docs/errors.md."""

from __future__ import annotations

import csv
import io
import os
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchlab.data import load_audio, load_track
from patchlab.errors import PatchlabError
from patchlab.experiment import KEYS, Experiment, from_dict, load_config
from patchlab.preflight import check_audio

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COLUMNS = ["file", "attribute_label", "single_instruction", "single_answer", "multi_instruction", "multi_answer"]

text = st.text(alphabet=string.printable + "é中\u00a0,\"'()", max_size=30)
files = st.one_of(
    st.sampled_from(["a.wav", "b.wav", "sub/a.wav", "./a.wav", "../a.wav", "/etc/passwd", "A.wav", "a.WAV", ""]),
    text,
)
labels = st.sampled_from(["female", "male", "Female", "MALE", "robot", "", " female"])
answers = st.one_of(st.sampled_from(["(a) Female", "(b) Male", "(c) Robot", "(b) Female", "Male", ""]), text)
questions = st.one_of(st.just("Gender? (a) Female (b) Male"), text)
rows = st.lists(st.tuples(files, labels, questions, answers), min_size=0, max_size=6)


@FUZZ
@given(rows=rows, raw=st.booleans(), extra=text)
def test_metadata_rows_give_clips_that_match_them_or_a_patchlab_error(tmp_path_factory, rows, raw, extra):
    root = tmp_path_factory.mktemp("fuzz")
    audio = root / "Gender" / "audio"
    (audio / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "sub/a.wav", "A.wav"):
        sf.write(audio / name, np.zeros(160, np.float32), 16000)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for f, label, q, a in rows:
        writer.writerow([f, label, q, a, "-", "-"])
    body = buf.getvalue() + (extra if raw else "")  # raw: a trailing fragment of arbitrary text
    (root / "Gender" / "metadata.csv").write_text(body, encoding="utf-8")
    try:
        clips = load_track(root, "Gender")
    except PatchlabError as e:
        assert e.what and e.fix
        return
    ids = [c.id for c in clips]
    assert len(ids) == len(set(ids))  # no two clips merged
    listed = [r[0] for r in rows]
    if not raw:
        assert ids == listed  # every row is a clip, its id exactly the file column, in file order
    for c in clips:
        assert c.path.resolve().is_relative_to(root.resolve())
        assert c.label.strip().casefold() == c.options[c.answer].casefold()


schema_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True), text,
    st.lists(st.one_of(st.integers(-2, 40), text), max_size=3), st.dictionaries(text, st.integers(), max_size=2),
)  # fmt: skip


@FUZZ
@given(config=st.dictionaries(st.one_of(st.sampled_from(sorted(KEYS)), text), schema_values, max_size=5))
def test_configs_give_an_experiment_or_a_patchlab_error(config):
    config = {"name": "fuzz", **config}
    try:
        exp = from_dict(config, "fuzz.yaml")
    except PatchlabError as e:
        assert e.what and e.fix
        return
    assert isinstance(exp, Experiment)
    for key, value in config.items():  # what was accepted is what the experiment holds: nothing re-typed
        assert exp.config()[key] == value
        if isinstance(value, bool):
            assert key == "trust_remote_code"


@FUZZ
@given(body=st.text(alphabet=string.printable + "&*!|>-:[]{}", max_size=200))
def test_yaml_text_gives_an_experiment_or_a_patchlab_error(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(body)
    try:
        load_config(path)
    except PatchlabError as e:
        assert len(str(e)) < 1200


@FUZZ
@given(content=st.binary(max_size=400), header=st.sampled_from([b"", b"RIFF", b"fLaC", b"OggS", b"ID3"]))
def test_audio_file_contents_give_a_waveform_or_a_patchlab_error(tmp_path_factory, content, header):
    path = Path(tmp_path_factory.mktemp("audio")) / "clip.wav"
    path.write_bytes(header + content)
    try:
        wave = load_audio(path)
    except PatchlabError as e:
        assert str(path) in e.what
        return
    assert wave.ndim == 1 and wave.size > 0 and np.isfinite(wave).all()


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x00" * 64])
def test_the_preflight_names_a_broken_header(tmp_path, content):
    from patchlab.data import Sample

    (tmp_path / "x.wav").write_bytes(content)
    with pytest.raises(PatchlabError, match="Gender/x.wav"):
        check_audio([Sample("x.wav", "Gender", tmp_path / "x.wav", "male", "?", ("Female", "Male"), 1)])
