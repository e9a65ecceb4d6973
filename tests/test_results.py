"""The kept full-size runs (experiments/results/): their summaries, verdicts (effect, CI, p, Holm p, n) and headline
numbers, recomputed from the stored tables, match their pins; docs/results.md is exactly what those tables give."""

from __future__ import annotations

import difflib
import json
import shutil
import sys
from pathlib import Path

import pytest
from pins import moved, outside

from patchlab.experiment import from_dict
from patchlab.io import json_safe
from patchlab.kept import SUFFIX, keep, read_kept, recompute, write_kept
from patchlab.runner import run

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "experiments" / "results"
NAMES = sorted(p.stem for p in KEPT.glob("*.json"))  # the pins: each kept run, and its replication
BUDGET = 20 * 2**20  # bytes: the kept tables of every full-size run together


def _tool():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import results
    finally:
        sys.path.pop(0)
    return results


@pytest.fixture(scope="session")  # session, not module: a worker running other tests between these keeps it
def recomputed(sakura, tmp_path_factory) -> dict:
    return _tool().recompute_all(tmp_path_factory.mktemp("kept"))


def test_the_kept_runs_are_the_full_size_runs_and_fit_the_budget():
    assert {"audiolens_findings", "cross_model", "replicate_audiolens_findings"} <= set(NAMES)
    size = sum(f.stat().st_size for f in KEPT.rglob("*") if f.is_file())
    assert size < BUDGET, f"experiments/results holds {size / 2**20:.1f} MB (budget 20 MB)"
    for name in NAMES:
        assert not json.loads((KEPT / f"{name}.json").read_text())["small"], f"{name} is not a full-size run"


@pytest.mark.parametrize("name", NAMES)
def test_a_kept_run_recomputes_its_pinned_summary_and_verdicts(name, recomputed):
    summary, _ = recomputed[name]
    pinned = json.loads((KEPT / f"{name}.json").read_text())
    if "replication" in pinned:  # the agreement of the parts' verdicts, as the report prints it
        assert summary["replication"] == pinned["replication"]
        return
    assert outside(summary) == []
    assert moved(pinned, summary) == []
    decisive = [v for v in summary["verdicts"] if v["verdict"] in ("supported", "refuted", "negligible")]
    assert len(decisive) >= len(summary["verdicts"]) // 2, "a full-size run decides most of its hypotheses"


def test_a_kept_run_recomputes_exactly_what_the_run_wrote(tiny_dir, toy_data, tmp_path):
    """Keeping loses nothing a statistic reads: a run with every analysis, kept (columns no statistic reads left out,
    float32-valued columns stored as float32) and recomputed, gives the run's own summary, number for number."""
    config = dict(name="kept", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                  analyses=["lens", "patch", "ground", "enrich", "cue", "knockout", "findings", "probe"], limit=4,
                  shard_size=2, ground={"n_boot": 50}, patch={"corruption": "swap"})  # fmt: skip
    summary = run(from_dict(config, "test"), tmp_path / "run", progress=False)
    keep(tmp_path / "run", tmp_path / "kept")
    again = recompute(tmp_path / "kept", tmp_path / "again", toy_data)
    assert json.loads(json.dumps(json_safe(again))) == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert json.loads(json.dumps(json_safe(again))) == json.loads(json.dumps(json_safe(summary)))


def test_a_changed_table_moves_the_pins(recomputed, sakura, tmp_path):
    """The check has teeth: one clip's knockout effect changed in a kept table (patchlab-mini's run of cross_model)
    moves pinned numbers; the same tables recomputed again move none."""
    kept, out = KEPT / "cross_model" / "models" / "patchlab-mini", recomputed["cross_model"][1] / "models"
    pinned = json.loads((out / "patchlab-mini" / "summary.json").read_text())
    copy = tmp_path / "kept"
    shutil.copytree(kept, copy)
    assert moved(pinned, recompute(copy, tmp_path / "same", sakura)) == []
    path = copy / "tables" / f"knockout{SUFFIX}"
    table = read_kept(path)
    table.loc[0, "logit_diff_change"] += 0.5
    write_kept(path, table)
    assert moved(pinned, recompute(copy, tmp_path / "changed", sakura))


def test_the_results_doc_is_what_the_kept_tables_give(recomputed):
    text, doc = _tool().render(recomputed), (ROOT / "docs" / "results.md").read_text()
    diff = "".join(list(difflib.unified_diff(doc.splitlines(True), text.splitlines(True), "committed", "tables"))[:40])
    assert text == doc, f"docs/results.md is stale: run `make results`\n{diff}"
