"""`patchlab replicate`: K disjoint parts of the data, each a complete run, and per hypothesis whether its verdict
replicates (flips between supported and refuted are named)."""

from __future__ import annotations

import pandas as pd

from patchlab.cli import main
from patchlab.data import load_track
from patchlab.experiment import from_dict
from patchlab.replicate import agreement, hypothesis_key


def test_parts_are_disjoint_cover_the_track_and_keep_its_label_mix(sakura):
    whole = load_track(sakura, "Gender")
    parts = [load_track(sakura, "Gender", part=(i, 3), seed=0) for i in range(3)]
    ids = [{s.id for s in p} for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == {s.id for s in whole}
    share = pd.Series([s.label for s in whole]).value_counts(normalize=True)
    for p in parts:
        assert (pd.Series([s.label for s in p]).value_counts(normalize=True) - share).abs().max() < 0.02
    limited = load_track(sakura, "Gender", limit=8, seed=0, part=(1, 3))
    assert len(limited) == 8 and {s.id for s in limited} <= ids[1]


def test_a_part_is_a_config_key_checked_like_any_other():
    exp = from_dict({"name": "x", "part": [1, 2]}, "x.yaml")
    assert exp.part == [1, 2] and exp.digest() != from_dict({"name": "x"}, "x.yaml").digest()
    for bad in ([2, 2], [0, 1], [0]):
        try:
            from_dict({"name": "x", "part": bad}, "x.yaml")
        except ValueError as e:
            assert "part" in str(e)
        else:
            raise AssertionError(bad)


def test_agreement_names_what_replicates_what_differs_and_what_flips():
    def summary(*verdicts):
        return {"verdicts": [dict(hypothesis=f"H{'abcd'[i]}: dip from layer {3 + len(v)} to 9", kind="finding",
                                  verdict=v, effect=0.1, ci_lo=0.0, ci_hi=0.2, min_effect=0.05, p_corrected=0.01, n=20)
                             for i, v in enumerate(verdicts)]}  # fmt: skip

    a = summary("supported", "supported", "inconclusive", "inconclusive")
    b = summary("supported", "refuted", "supported", "inconclusive")
    _, lines = agreement([a, b])
    assert lines["replication"].tolist() == [
        "replicates",
        "flips",
        "agrees where decisive",
        "inconclusive in every part",
    ]
    assert hypothesis_key("dip from layer 3 to 9 (found on 12 clips)") == "dip from layer # to # (found on # clips)"


def test_replicate_runs_each_part_and_writes_the_agreement_table(tiny_dir, toy_data, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(name="rep", model=str(tiny_dir("qwen2_audio")), data=str(toy_data),
                                       analyses=["lens"], shard_size=3)))  # fmt: skip
    out = tmp_path / "out"
    assert main(["replicate", str(cfg), "--out", str(out), "--parts", "2"]) == 0
    samples = [set(pd.read_csv(out / "parts" / f"part-{i}" / "tables" / "lens_per_sample.csv")["sample"])
               for i in range(2)]  # fmt: skip
    assert samples[0] and samples[1] and not (samples[0] & samples[1])
    lines = pd.read_csv(out / "tables" / "replication.csv")
    assert len(lines) and set(lines["replication"]) == {"inconclusive in every part"}  # 3 clips a part
    assert (out / "report.html").exists() and "replicat" in capsys.readouterr().out


def test_a_finished_run_replicated_from_its_folder_gives_each_part_exactly_its_own_rows(tiny_dir, toy_data, tmp_path):
    """No model: the run's clips dealt into the parts a config's `part:` would hold, each part's verdicts recomputed
    from its rows alone; a part's lens rows are exactly the run's rows of its clips. Options that only a config
    takes are refused, naming them."""
    from patchlab.runner import run

    config = dict(name="rep", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), analyses=["lens"], shard_size=3)
    run(from_dict(config, "test"), tmp_path / "run", progress=False)
    out = tmp_path / "out"
    assert main(["replicate", str(tmp_path / "run"), "--out", str(out), "--parts", "2"]) == 0
    whole = pd.read_csv(tmp_path / "run" / "tables" / "lens_per_sample.csv")
    parts = [pd.read_csv(out / "parts" / f"part-{i}" / "tables" / "lens_per_sample.csv") for i in range(2)]
    dealt = [{s.id for s in load_track(toy_data, "Gender", part=(i, 2))} for i in range(2)]
    for part, ids in zip(parts, dealt):
        assert set(part["sample"]) == ids
        mine = whole[whole["sample"].isin(ids)].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, mine)
    assert (out / "tables" / "replication.csv").exists()
    assert main(["replicate", str(tmp_path / "run"), "--out", str(tmp_path / "o2"), "--limit", "4"]) == 2
    assert not (tmp_path / "o2").exists()
