"""Fault injection: nothing lost, nothing silently wrong (issue 13). One test per reproduced case, then a
property test that interrupts runs at random points and resumes them with random changes: the tables equal
an uninterrupted run's, or the resume is refused."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patchlab
from patchlab import provenance, runner
from patchlab.cli import main
from patchlab.data import load_audio, load_track, tone
from patchlab.data.synth import HEADER
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict
from patchlab.io import read_table
from patchlab.models.base import Prompt
from patchlab.runner import run, tables_equal

ANSWER = {"female": "(a) Female", "male": "(b) Male"}


def _gender_track(root: Path, clips: dict[str, tuple[str, np.ndarray | bytes]]) -> Path:
    """A Gender track of the given clips: name -> (label, waveform or raw bytes)."""
    audio = root / "Gender" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    for name, (label, content) in clips.items():
        if isinstance(content, bytes):
            (audio / name).write_bytes(content)
        else:
            sf.write(audio / name, content, 16000, subtype="FLOAT")
        rows.append(f'{name},{label},"What is the speaker\'s gender? (a) Female (b) Male",{ANSWER[label]},-,-')
    (root / "Gender" / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _clips(n: int = 6) -> dict:
    return {
        f"c{i}.wav": ("female" if i % 2 else "male", tone(1.0 + 0.1 * i, 240 if i % 2 else 110, seed=i))
        for i in range(n)
    }


ROOT = Path(__file__).resolve().parents[1]


def _cfg(model: Path, data: Path, **kw) -> dict:
    return dict(name="t", model=str(model), data=str(data), tracks=["Gender"], **kw)


# 1. a user's folder is never deleted or written into


def test_run_refuses_a_folder_of_the_users_and_leaves_it_alone(tiny_dir, toy_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my thesis")
    exp = from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2), "t")
    with pytest.raises(PatchlabError, match="holds files patchlab did not write"):
        run(exp, mine, progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my thesis"


def test_demo_never_removes_a_folder_with_files_it_did_not_write(sakura, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(mine), "--data", str(sakura)]) == 2
    assert "holds files patchlab did not write" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep"
    # a folder whose marker names no command patchlab knows: refused, nothing cleared
    old = tmp_path / "old"
    old.mkdir()
    (old / ".patchlab").write_text("{}")
    (old / "run.json").write_text(json.dumps({"name": "demo", "digest": "older"}))
    (old / "mine.csv").write_text("1,2\n")
    assert main(["demo", "--out", str(old), "--data", str(sakura)]) == 2
    assert "holds the output of" in capsys.readouterr().err
    assert (old / "mine.csv").exists() and (old / "run.json").exists()


def test_an_unmarked_folder_that_looks_like_a_run_is_the_users(sakura, tmp_path, capsys):
    """Folder names prove nothing: a folder without patchlab's marker holding run.json (with a config), plots/ and
    tables/ is refused by demo and run alike, and nothing is written into it (not even the marker)."""
    theirs = tmp_path / "theirs"
    for sub in ("plots", "tables"):
        (theirs / sub).mkdir(parents=True)
        (theirs / sub / "figure.png").write_bytes(b"mine")
    (theirs / "run.json").write_text(json.dumps({"name": "demo", "config": {"name": "demo"}}))
    before = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*"))
    assert main(["demo", "--out", str(theirs), "--data", str(sakura)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert main(["run", str(ROOT / "experiments" / "gender_grounding.yaml"), "--out", str(theirs)]) == 2
    assert sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*")) == before


def test_a_restart_removes_only_the_files_patchlab_wrote(tiny_dir, toy_data, tmp_path):
    """A finished run into whose plots/, tables/ and shards/ a user put files, started over as the demo does after a
    config change: patchlab's files go (by its manifest), the user's stay where they were, and the new run writes."""
    from patchlab.outdir import clear_own
    from patchlab.runner import RUN_ENTRIES

    out = tmp_path / "out"
    run(from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2), "t"), out, progress=False)
    theirs = ["plots/my_figure.png", "tables/my_table.csv", "shards/notes.txt", "shards/Gender-0000/mine.txt", "x.md"]
    for rel in theirs:
        (out / rel).write_text("mine")
    left = clear_own(out, RUN_ENTRIES)
    assert sorted(left) == sorted(r for r in theirs if r != "x.md")
    assert all((out / rel).read_text() == "mine" for rel in theirs)
    assert not (out / "run.json").exists() and not (out / "tables" / "lens_per_sample.csv").exists()
    with pytest.raises(PatchlabError, match="holds files patchlab did not write.*mine.txt"):
        run(from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2, seed=1), "t"), out,
            progress=False)  # fmt: skip
    (out / "shards" / "Gender-0000" / "mine.txt").unlink()  # as the message says: then the run resumes
    run(from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2, seed=1), "t"), out,
        resume=True, progress=False)  # fmt: skip
    assert all((out / rel).read_text() == "mine" for rel in theirs if "Gender-0000" not in rel)
    assert (out / "tables" / "lens_per_sample.csv").exists()


def test_a_users_file_where_patchlab_would_write_is_never_overwritten(tiny_dir, toy_data, tmp_path):
    """Inside its own folder, a file patchlab did not write is not overwritten: the write is refused, naming it."""
    out = tmp_path / "out"
    run(from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2), "t"), out, progress=False)
    (out / "report.html").unlink()
    (out / "report.html").write_text("my report")
    with pytest.raises(PatchlabError, match="report.html exists and patchlab did not write it"):
        run(from_dict(_cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens"], limit=2), "t"), out, resume=True,
            progress=False)  # fmt: skip
    assert (out / "report.html").read_text() == "my report"


def test_mini_build_refuses_a_folder_that_is_not_its_build(tmp_path):
    from patchlab.mini.build import build

    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(PatchlabError, match="not a patchlab-mini build"):
        build(tmp_path)
    assert (tmp_path / "keep.txt").exists()


@pytest.mark.parametrize("command", ["lens", "patch"])
def test_lens_and_patch_refuse_a_users_folder_before_loading_anything(command, toy_data, tmp_path, capsys):
    (tmp_path / "results.csv").write_text("mine")
    code = main(
        [command, "--model", "no-such-model", "--data", str(toy_data), "--track", "Gender", "--out", str(tmp_path)]
    )
    assert code == 2 and "did not write" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_text() == "mine"


# 2. a resume that would change the tables is refused


@pytest.fixture()
def finished_run(tiny_dir, toy_data, tmp_path):
    data = Path(shutil.copytree(toy_data, tmp_path / "data"))
    cfg = _cfg(tiny_dir("qwen2_audio"), data, analyses=["lens"], limit=6, shard_size=2)
    run(from_dict(cfg, "t"), tmp_path / "out", progress=False)
    return cfg, data, tmp_path / "out"


def test_resume_with_another_shard_size_is_refused(finished_run):
    cfg, _, out = finished_run
    with pytest.raises(PatchlabError, match="different config.*shard_size"):
        run(from_dict({**cfg, "shard_size": 3}, "t"), out, resume=True, progress=False)


def test_resume_after_a_clip_was_removed_from_the_metadata_is_refused(finished_run):
    cfg, data, out = finished_run
    meta = data / "Gender" / "metadata.csv"
    meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(PatchlabError, match="track\\(s\\) Gender .* changed"):
        run(from_dict(cfg, "t"), out, resume=True, progress=False)


def test_resume_after_an_audio_file_changed_is_refused(finished_run):
    cfg, data, out = finished_run
    sf.write(data / "Gender" / "audio" / "tone0.wav", tone(1.0, 300), 16000)
    with pytest.raises(PatchlabError, match="other data"):
        run(from_dict(cfg, "t"), out, resume=True, progress=False)


def test_a_finished_shard_changed_after_it_was_written_is_not_reused(finished_run):
    cfg, _, out = finished_run
    lens = out / "shards" / "Gender-0001" / "lens.csv"
    table = read_table(lens)
    table.loc[0, "correct"] = 1.0 - table.loc[0, "correct"]  # one answer flipped by hand
    table.to_csv(lens, index=False)
    with pytest.raises(PatchlabError, match="Gender-0001 has a table \\(lens.csv\\) changed"):
        run(from_dict(cfg, "t"), out, resume=True, progress=False)


def test_resume_with_other_code_is_refused(finished_run, monkeypatch):
    cfg, _, out = finished_run
    monkeypatch.setattr(provenance, "code_fingerprint", lambda: "other code")
    with pytest.raises(PatchlabError, match="other patchlab code"):
        run(from_dict(cfg, "t"), out, resume=True, progress=False)


# 3. NaN is never an answer


def test_a_clip_with_nan_samples_is_refused_naming_the_file(tmp_path):
    wave = tone(1.0)
    wave[100] = np.nan
    sf.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(PatchlabError, match="nan.wav holds 1 NaN/inf samples"):
        load_audio(tmp_path / "nan.wav")


def test_a_nan_clip_in_a_run_is_a_skipped_row_and_never_counted(tiny_dir, tmp_path):
    clips = _clips(4)
    bad = tone(1.0)
    bad[5] = np.nan
    clips["nan.wav"] = ("female", bad)
    data = _gender_track(tmp_path / "d", clips)
    exp = from_dict(_cfg(tiny_dir("qwen2_audio"), data, analyses=["lens", "patch", "ground"]), "t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(exp, tmp_path / "out", progress=False)
    skipped = read_table(tmp_path / "out" / "tables" / "skipped.csv")
    assert skipped["sample"].tolist() == ["nan.wav"] and "NaN" in skipped["error"][0]
    lens = read_table(tmp_path / "out" / "tables" / "lens_per_sample.csv")
    assert "nan.wav" not in set(lens["sample"]) and lens["correct"].notna().all()


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = Path(shutil.copytree(tiny_dir("qwen2_audio"), tmp_path / "ckpt"))
    f = next(ckpt.glob("*.safetensors"))
    state = load_file(f)
    name = next(k for k in state if "layers.0.mlp" in k)
    state[name][0, 0] = float("nan")
    save_file(state, f, metadata={"format": "pt"})
    with pytest.raises(PatchlabError, match="holds 1 NaN/inf values"):
        patchlab.load(ckpt)


def test_nan_activations_in_the_lens_name_the_clip_instead_of_predicting_a_label(qwen, toy_data):
    def poison(mod, args, out):
        return out * float("nan")

    h = qwen.layers[1].mlp.register_forward_hook(poison)
    try:
        with pytest.raises(PatchlabError, match=r"NaN/inf in the logit lens of tone\d.wav from layer 1") as e:
            patchlab.lens(qwen, load_track(toy_data, "Gender", 2), progress=False)
    finally:
        h.remove()
    assert "weights" in e.value.fix  # float32: not blamed on half precision


# 4. label sets come from the track, never from the clips selected


def test_lens_with_limit_one_reads_the_whole_label_set(toy_data, tiny_dir, tmp_path):
    assert main(["lens", "--model", str(tiny_dir("qwen2_audio")), "--data", str(toy_data), "--track", "Gender",
                 "--limit", "1", "--out", str(tmp_path)]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rests_on"]["Gender"]["labels"] == ["female", "male"]
    assert summary["tracks"]["Gender"]["lens"]["direct"]["n_samples"] == 1


def test_lens_api_reads_the_tracks_labels(qwen, toy_data):
    res = patchlab.lens(qwen, load_track(toy_data, "Gender", 1), progress=False)
    assert res.labels.labels == ("female", "male")


# 5. configs are validated before any work


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": "dirct"}, r"prompt = 'dirct' is not valid"),
        ({"patch": {"corruption": "swapp"}}, r"patch.corruption = 'swapp'"),
        ({"limit": -3}, r"limit = -3 .*greater than or equal to 1"),
        ({"limit": 0}, r"limit = 0"),
        ({"ground": {"n_boot": "many"}}, r"ground.n_boot = 'many' is not valid"),
        ({"formats": []}, r"formats = \[\]"),
        ({"small": {"limit": "two"}}, r"\(small\): limit = 'two'"),
    ],
)
def test_bad_config_values_are_refused_naming_key_value_and_what_it_takes(change, message, tmp_path):
    with pytest.raises(PatchlabError, match=message) as e:
        from_dict({"name": "x", **change}, "x.yaml")
    assert e.value.fix.startswith("set ")


def test_cli_limit_zero_or_negative_is_refused(toy_data, tmp_path, capsys):
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as e:
            main(["lens", "--model", "m", "--data", str(toy_data), "--track", "Gender", "--limit", bad,
                  "--out", str(tmp_path)])  # fmt: skip
        assert e.value.code == 2
    assert "expected a whole number >= 1" in capsys.readouterr().err


# 6. dataset paths stay inside the dataset


@pytest.mark.parametrize("entry", ["../../../outside.wav", "ABSOLUTE", "link.wav"])
def test_a_file_entry_leading_outside_the_dataset_is_refused(entry, tmp_path):
    outside = tmp_path / "outside.wav"
    sf.write(outside, tone(1.0), 16000)
    data = _gender_track(tmp_path / "d", {"ok.wav": ("male", tone(1.0))})
    (data / "Gender" / "audio" / "link.wav").symlink_to(outside)
    name = str(outside) if entry == "ABSOLUTE" else entry
    meta = data / "Gender" / "metadata.csv"
    meta.write_text(meta.read_text() + f'{name},female,"Gender? (a) Female (b) Male",(a) Female,-,-\n')
    with pytest.raises(PatchlabError, match="line 3: file .* points outside the dataset folder"):
        load_track(data, "Gender")


# 7. one broken donor does not drop good clips


def test_an_unreadable_donor_is_replaced_and_the_clip_keeps_its_rows(tiny_dir, tmp_path):
    clips = _clips(4)
    clips["broken.wav"] = ("female", np.full(16000, np.nan, dtype=np.float32))  # a header, then NaN samples
    data = _gender_track(tmp_path / "d", clips)
    exp = from_dict(_cfg(tiny_dir("qwen2_audio"), data, analyses=["lens", "patch"]), "t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(exp, tmp_path / "out", progress=False)
    patched = read_table(tmp_path / "out" / "tables" / "patching.csv")
    males = {"c0.wav", "c2.wav"}  # their donors are drawn from the females, one of which is broken
    assert males <= set(patched["sample"]) and "broken.wav" not in set(patched["donor"])
    skipped = read_table(tmp_path / "out" / "tables" / "skipped.csv")
    assert skipped["sample"].tolist() == ["broken.wav"]


# 8. no work lost to late checks


def test_out_that_is_a_file_is_refused_before_the_model_loads(toy_data, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["lens", "--model", "no-such", "--data", str(toy_data), "--track", "Gender", "--out", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    exp = from_dict(_cfg("no-such", toy_data), "t")
    with pytest.raises(PatchlabError, match="is a file"):
        run(exp, f, progress=False)


def test_out_in_a_folder_that_cannot_be_written_is_refused(toy_data, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder would go")
    exp = from_dict(_cfg("no-such", toy_data), "t")
    with pytest.raises(PatchlabError, match="cannot write to output folder"):
        run(exp, blocker / "out", progress=False)


def test_a_long_clip_in_the_lens_names_its_file(qwen, tmp_path):
    data = _gender_track(tmp_path, {"long.wav": ("male", tone(31.0)), "ok.wav": ("female", tone(1.0))})
    with pytest.raises(PatchlabError, match="long.wav lasts 31.0 s"):
        patchlab.lens(qwen, load_track(data, "Gender"), progress=False)


def test_a_metadata_file_with_a_utf8_bom_loads(tmp_path):
    data = _gender_track(tmp_path, {"a.wav": ("male", tone(1.0))})
    meta = data / "Gender" / "metadata.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    assert [s.id for s in load_track(data, "Gender")] == ["a.wav"]


def test_broken_config_json_and_weights_give_clear_errors(tiny_dir, tmp_path):
    ckpt = Path(shutil.copytree(tiny_dir("qwen2_audio"), tmp_path / "ckpt"))
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(PatchlabError, match="config.json is not a valid config"):
        patchlab.load(ckpt)
    ckpt2 = Path(shutil.copytree(tiny_dir("qwen2_audio"), tmp_path / "ckpt2"))
    weights = next(ckpt2.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(PatchlabError, match="cannot load the qwen2_audio weights"):
        patchlab.load(ckpt2)


def test_prepare_still_refuses_long_audio_given_directly(qwen):
    with pytest.raises(PatchlabError, match="longer than"):
        qwen.prepare(np.zeros(16000 * 31, np.float32), 16000, Prompt("?"))


# the property: interrupted at a random point, resumed with a random change -> equal, or refused


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs (no except/finally of patchlab's catches it)."""


CHANGES = ("none", "none", "shard_size", "seed", "limit", "audio", "metadata", "shard_file", "shard_done")


@pytest.fixture(scope="module")
def prop_setup(tiny_dir, toy_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("prop")
    cfg = _cfg(tiny_dir("qwen2_audio"), toy_data, analyses=["lens", "patch"], limit=6, shard_size=2)
    patchlab.load(cfg["model"])  # warm the loader's caches
    ref = base / "ref"
    run(from_dict(cfg, "t"), ref, progress=False)
    return cfg, toy_data, {t: read_table(ref / "tables" / f"{t}.csv") for t in ("lens_per_sample", "patching")}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(
    kill_at=st.integers(0, 5),
    kill_kind=st.sampled_from(["before_shard", "before_rename", "after_run_json"]),
    change=st.sampled_from(CHANGES),
)
def test_killed_then_resumed_with_a_random_change_equals_or_is_refused(prop_setup, kill_at, kill_kind, change):
    cfg, toy, ref = prop_setup
    with tempfile.TemporaryDirectory() as d:
        data = Path(shutil.copytree(toy, Path(d) / "data"))
        out = Path(d) / "out"
        cfg = {**cfg, "data": str(data)}
        _interrupted(cfg, out, kill_at, kill_kind)
        new = dict(cfg)
        changed = _apply(change, new, data, out)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run(from_dict(new, "t"), out, resume=True, progress=False)
        except PatchlabError:
            assert changed, f"a resume with no change ({change}) was refused"
            return
        assert not changed, f"a resume after changing {change} was not refused"
        for name, table in ref.items():
            assert tables_equal(read_table(out / "tables" / f"{name}.csv"), table, tol=0), name


def _interrupted(cfg: dict, out: Path, kill_at: int, kind: str) -> None:
    """Run, killed at the `kill_at`-th shard (before computing it, or after writing it but before its rename)."""
    import patchlab.analyses as analyses

    calls = {"n": 0}
    real_tables, real_replace, real_start = analyses.shard_tables, runner.os.replace, runner._start

    def tables(*a, **k):
        if kind == "before_shard" and calls["n"] == kill_at:
            raise Killed
        calls["n"] += 1
        return real_tables(*a, **k)

    def replace(src, dst):
        if kind == "before_rename" and calls["n"] - 1 == kill_at:
            raise Killed
        return real_replace(src, dst)

    def start(*a, **k):
        run_id = real_start(*a, **k)
        if kind == "after_run_json" and kill_at == 0:
            raise Killed
        return run_id

    mp = pytest.MonkeyPatch()
    mp.setattr(analyses, "shard_tables", tables)
    mp.setattr(runner.os, "replace", replace)
    mp.setattr(runner, "_start", start)
    try:
        run(from_dict(cfg, "t"), out, progress=False)
    except Killed:
        pass
    finally:
        mp.undo()


def _apply(change: str, cfg: dict, data: Path, out: Path) -> bool:
    """Make the change; True where it changes what the resumed run would compute (so it must be refused)."""
    done = sorted(d for d in (out / "shards").glob("Gender-*/done")) if (out / "shards").exists() else []
    if change == "shard_size":
        cfg["shard_size"] = 3
    elif change == "seed":
        cfg["seed"] = 1
    elif change == "limit":
        cfg["limit"] = 4
    elif change == "audio":
        sf.write(data / "Gender" / "audio" / "tone1.wav", tone(1.1, 300, seed=9), 16000)
    elif change == "metadata":
        meta = data / "Gender" / "metadata.csv"
        meta.write_text("\n".join(meta.read_text().splitlines()[:-1]) + "\n")
    elif change == "shard_file" and done:
        f = done[0].parent / "lens.csv"
        f.write_text(f.read_text() + "\n")
        return True
    elif change == "shard_done" and done:
        done[0].write_text(json.dumps({**json.loads(done[0].read_text()), "samples": ["x"]}))
        return True
    else:
        return False
    return (out / "run.json").exists()  # a run that never wrote run.json starts afresh with the new config


def test_property_reference_is_the_uninterrupted_run(prop_setup):
    _, _, ref = prop_setup
    assert ref["lens_per_sample"]["sample"].nunique() == 6 and ref["patching"]["sample"].nunique() == 6


def test_tables_equal_treats_missing_text_in_both_tables_as_equal():
    """pandas' string dtype keeps NaN through astype(str): a missing `pred` in both runs must still compare equal."""
    a = pd.DataFrame({"pred": pd.array(["female", None], dtype="string"), "x": [1.0, float("nan")]})
    b = pd.DataFrame({"pred": pd.array(["male", None], dtype="string"), "x": [1.0, float("nan")]})
    assert tables_equal(a, a.copy(), tol=0) and not tables_equal(a, b, tol=0)
