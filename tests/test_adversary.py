"""Round 3's adversarial inputs (issue 29), one test per case: each failed before its fix. Classes, not only cases:
clip identity, what patchlab may delete, paths that escape, weights identity, remote code, silently wrong tables,
commands overwriting each other, late errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from patchlab.cli import main
from patchlab.data import load_track, tone
from patchlab.data.synth import HEADER
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict, load_config
from patchlab.io import read_table, write_table
from patchlab.outdir import claim
from patchlab.provenance import model_fingerprint
from patchlab.runner import run

ANSWER = {"female": "(a) Female", "male": "(b) Male"}


def _row(file: str, label: str, answer: str | None = None) -> str:
    return f'{file},{label},"Gender? (a) Female (b) Male",{answer or ANSWER[label.lower()]},-,-'


def _track(root: Path, rows: list[str], clips: dict[str, float]) -> Path:
    """A Gender track: `clips` maps a file (path within audio/) to a tone's pitch; `rows` are metadata lines."""
    for name, pitch in clips.items():
        (root / "Gender" / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / "Gender" / "audio" / name, tone(1.0, pitch), 16000)
    (root / "Gender" / "metadata.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


# 1. a clip's identity is its path within the track


def test_two_clips_with_one_file_name_in_two_folders_are_two_clips(tiny_dir, tmp_path):
    """spkA/001.flac (female) and spkB/001.flac (male), and x.wav beside x.flac: four clips, four ids, each with its
    own label; nothing merged, nothing dropped (before: ids were stems, so two clips became one)."""
    clips = {"spkA/001.flac": 240, "spkB/001.flac": 110, "x.wav": 240, "x.flac": 110}
    labels = ["female", "male", "female", "male"]
    data = _track(tmp_path / "d", [_row(f, la) for f, la in zip(clips, labels)], clips)
    assert [(s.id, s.label) for s in load_track(data, "Gender")] == list(zip(clips, labels))
    exp = from_dict(dict(name="t", model=str(tiny_dir("qwen2_audio")), data=str(data), analyses=["lens"]), "t")
    summary = run(exp, tmp_path / "out", progress=False)
    per = read_table(tmp_path / "out" / "tables" / "lens_per_sample.csv")
    assert sorted(per["sample"].unique()) == sorted(clips)
    assert per.groupby("sample")["label"].first().to_dict() == dict(zip(clips, labels))
    assert summary["rests_on"]["Gender"]["n_clips"] == 4


def test_a_clip_id_that_looks_like_a_number_stays_a_string(tmp_path):
    write_table(tmp_path / "t.csv", pd.DataFrame({"sample": ["001", "1e3", "NA"], "x": [1, 2, 3]}))
    assert read_table(tmp_path / "t.csv")["sample"].tolist() == ["001", "1e3", "NA"]


def test_duplicate_rows_or_paths_are_refused_naming_the_lines(tmp_path):
    clips = {"a.wav": 240, "b.wav": 110}
    data = _track(tmp_path / "d", [_row("a.wav", "female"), _row("b.wav", "male"), _row("./a.wav", "female")], clips)
    with pytest.raises(PatchlabError, match=r"lines 2 and 4 name the same audio file"):
        load_track(data, "Gender")


# 3. every name that becomes a path stays inside its root


@pytest.mark.parametrize("track", ["../../x/R/Gender", "Gender/../../R", "..", ".hidden", "a\\b"])
def test_a_track_that_is_a_path_is_refused(track):
    with pytest.raises(PatchlabError, match="is not a folder name"):
        from_dict({"name": "x", "tracks": [track]}, "x.yaml")


def test_a_track_name_leading_out_of_out_writes_nothing_outside(tiny_dir, toy_data, tmp_path):
    """The shard writer refuses a name that leads out of shards/ even if a caller bypasses the schema."""
    from patchlab.runner import place_shard

    victim = tmp_path / "R" / "Gender-0000"
    victim.mkdir(parents=True)
    (victim / "mine.txt").write_text("keep")
    out = claim(tmp_path / "out", "run")
    with pytest.raises(PatchlabError, match="leads out of"):
        place_shard(out, "../../R/Gender-0000", lambda tmp: None, {"done": "{}"})
    assert (victim / "mine.txt").read_text() == "keep"


def test_a_model_whose_folder_name_is_dots_gets_a_folder_inside_out():
    from patchlab.compare import model_slug

    for model in ("/x/..", "..", ".", "/"):
        slug = model_slug(model, set())
        assert slug not in ("", ".", "..") and "/" not in slug


# 4. any change to the weights is seen


def test_a_tensor_changed_in_the_middle_of_a_large_weights_file_changes_the_fingerprint(tmp_path, monkeypatch):
    """The first and last MiB of a 65 MiB file are the same, a byte in the middle differs: before, the fingerprint
    hashed only the ends and a resume mixed two models."""
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(65 << 20))
    before = model_fingerprint(str(ckpt))
    assert model_fingerprint(str(ckpt)) == before  # cached: the same file is not re-read
    time.sleep(0.01)
    with weights.open("r+b") as f:
        f.seek(32 << 20)
        f.write(b"\x00\x01\x02\x03")
    assert model_fingerprint(str(ckpt)) != before


# 5. remote code only with consent for that model


def _sneaky_checkpoint(tiny_dir, tmp_path) -> tuple[Path, Path]:
    """A tiny checkpoint whose config maps an unknown model_type to its own Python file, which leaves a file
    behind if it is ever imported."""
    import shutil

    ckpt = tmp_path / "sneaky"
    shutil.copytree(tiny_dir("qwen2_audio"), ckpt)
    ran = tmp_path / "code_ran"
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(model_type="sneaky_lalm", architectures=["SneakyForConditionalGeneration"])
    cfg["auto_map"] = {"AutoConfig": "sneaky.SneakyConfig", "AutoModel": "sneaky.SneakyForConditionalGeneration"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    (ckpt / "sneaky.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    return ckpt, ran


def test_a_checkpoints_own_code_never_runs_without_consent_even_if_stdin_says_yes(tiny_dir, tmp_path):
    ckpt, ran = _sneaky_checkpoint(tiny_dir, tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "patchlab.cli", "check", str(ckpt)], input="y\ny\n", capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "this checkpoint wants to run its own code" in res.stderr and "auto_map" in res.stderr
    assert not ran.exists()


def test_consent_in_a_config_is_for_its_model_not_for_a_model_given_on_the_command_line(tiny_dir, toy_data, tmp_path):
    ckpt, ran = _sneaky_checkpoint(tiny_dir, tmp_path)
    cfg = tmp_path / "c.yaml"
    model = str(tiny_dir("qwen2_audio"))
    cfg.write_text(yaml.safe_dump(dict(name="c", model=model, data=str(toy_data), analyses=["lens"], limit=2,
                                       trust_remote_code=True)))  # fmt: skip
    assert main(["run", str(cfg), "--model", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert not ran.exists()


# 6. silently wrong tables


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tracks": ["Gender", "Gender"]}, r"listed twice"),
        ({"limit": True}, r"limit = True is not valid"),
        ({"shard_size": "8"}, r"shard_size = '8' is not valid"),
        ({"ground": {"n_boot": True}}, r"ground.n_boot = True is not valid"),
        ({"trust_remote_code": "yes"}, r"trust_remote_code = 'yes' is not valid"),
        ({"models": ["patchlab-mini", "patchlab-mini"]}, r"listed twice"),
    ],
)
def test_values_that_would_silently_change_a_table_are_refused(change, message):
    with pytest.raises(PatchlabError, match=message):
        from_dict({"name": "x", **change}, "x.yaml")


@pytest.mark.parametrize(
    "rows, message",
    [
        ([_row("a.wav", "robot", "(a) Female"), _row("b.wav", "male")], r"line 2: attribute_label 'robot'"),
        ([_row("a.wav", "female"), _row("b.wav", "Female")], r"lines 2 and 3 spell one label two ways"),
        ([_row("a.wav", "female"), "b.wav,male"], r"line 3 has fewer fields"),
        ([_row("a.wav", "female"), _row("b.wav", "male") + ",extra"], r"line 3 has more fields"),
    ],
)
def test_metadata_that_would_silently_change_a_table_is_refused(rows, message, tmp_path):
    data = _track(tmp_path / "d", rows, {"a.wav": 240, "b.wav": 110})
    with pytest.raises(PatchlabError, match=message):
        load_track(data, "Gender")


def test_metadata_in_another_encoding_is_refused_naming_the_fix(tmp_path):
    data = _track(tmp_path / "d", [_row("a.wav", "female")], {"a.wav": 240})
    meta = data / "Gender" / "metadata.csv"
    meta.write_bytes(meta.read_text().replace("Gender?", "Géndér?").encode("cp1252"))
    with pytest.raises(PatchlabError, match="is not UTF-8") as e:
        load_track(data, "Gender")
    assert "iconv" in e.value.fix


def test_yaml_with_a_duplicate_key_or_an_alias_is_refused_briefly(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: a\nlimit: 4\nseed: 1\nlimit: 8\n")
    with pytest.raises(PatchlabError, match=r"line 4: key 'limit' is given twice \(first on line 2\)"):
        load_config(cfg)
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    cfg.write_text(bomb)
    t0 = time.time()
    with pytest.raises(PatchlabError, match="alias") as e:
        load_config(cfg)
    assert len(str(e.value)) < 400 and time.time() - t0 < 2


# 7. commands do not overwrite each other


def test_lens_into_a_run_folder_and_run_into_a_lens_folder_are_refused(tiny_dir, toy_data, tmp_path, capsys):
    model = str(tiny_dir("qwen2_audio"))
    out = tmp_path / "run"
    run(from_dict(dict(name="t", model=model, data=str(toy_data), analyses=["lens"], limit=2), "t"), out,
        progress=False)  # fmt: skip
    summary = (out / "summary.json").read_bytes()
    assert main(["lens", "--model", model, "--data", str(toy_data), "--track", "Gender", "--out", str(out)]) == 2
    assert "holds the output of `patchlab run`, not of `patchlab lens`" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == summary
    lens_out = tmp_path / "lens"
    assert main(["lens", "--model", model, "--data", str(toy_data), "--track", "Gender", "--limit", "2",
                 "--out", str(lens_out)]) == 0  # fmt: skip
    lens_summary = (lens_out / "summary.json").read_bytes()
    with pytest.raises(PatchlabError, match="holds the output of `patchlab lens`"):
        run(from_dict(dict(name="t", model=model, data=str(toy_data), analyses=["lens"], limit=2), "t"), lens_out,
            resume=True, progress=False)  # fmt: skip
    assert (lens_out / "summary.json").read_bytes() == lens_summary


# 8. every input checked before the model loads and before anything is written


@pytest.mark.parametrize(
    "change, message",
    [
        ({"device": "quantum"}, "device 'quantum' is not a torch device"),
        ({"patch": {"layers": [99]}}, r"patch.layers \[99\] are outside 0..29"),
        ({"knockout": {"layers": [0, 30]}}, r"knockout.layers \[30\] are outside 0..29"),
    ],
)
def test_bad_device_or_layers_are_refused_before_the_output_folder_is_made(change, message, toy_data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PatchlabError, match=message):
        run(from_dict({"name": "t", "data": str(toy_data), "limit": 2, **change}, "t"), out, progress=False)
    assert not out.exists()


def test_a_bad_clip_in_lens_is_refused_before_the_model_loads_and_the_fix_then_works(tiny_dir, tmp_path, capsys):
    data = _track(tmp_path / "d", [_row("a.wav", "female"), _row("b.wav", "male")], {"a.wav": 240, "b.wav": 110})
    (data / "Gender" / "audio" / "b.wav").write_bytes(b"not audio")
    out, model = tmp_path / "out", str(tiny_dir("qwen2_audio"))
    argv = ["lens", "--model", model, "--data", str(data), "--track", "Gender", "--out", str(out)]
    assert main(argv) == 2
    assert "Gender/b.wav" in capsys.readouterr().err and not out.exists()
    meta = data / "Gender" / "metadata.csv"
    meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")  # remove the clip, as the message says
    assert main(argv) == 0


def test_a_full_disk_is_an_error_message_and_leaves_no_temporary_shard(tiny_dir, toy_data, tmp_path, monkeypatch,
                                                                       capsys):  # fmt: skip
    real = Path.write_text

    def full(self, *a, **k):
        if ".Gender-0000." in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(name="c", model=str(tiny_dir("qwen2_audio")), data=str(toy_data),
                                       analyses=["lens"], limit=2)))  # fmt: skip
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out" / "shards").iterdir()] == []
