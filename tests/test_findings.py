"""AudioLens' findings as tests: on lens tables built with a known shape, each hypothesis is supported where the
shape has it and not where it does not; layers found from the data are tested on other clips."""

from __future__ import annotations

import numpy as np
import pandas as pd

from patchlab import findings, stats


def _lens_table(curve_ok, curve_fail, n_ok=30, n_fail=20, noise=0.05, seed=0) -> pd.DataFrame:
    """Final-position lens rows: p(true) per layer follows `curve_ok` for clips answered right, `curve_fail` else."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_ok + n_fail):
        right = i < n_ok
        curve = np.clip(np.asarray(curve_ok if right else curve_fail) + noise * rng.standard_normal(20), 0, 1)
        label = ["female", "male"][i % 2]
        for layer, p in enumerate(curve):
            rows.append(dict(sample=f"c{i}", layer=layer, position="final", p_true=p, correct=float(p > 0.5),
                             label=label, answer_correct=right))  # fmt: skip
    return pd.DataFrame(rows)


LAYERS = np.arange(20)
RISING = 0.5 + 0.45 * LAYERS / 19  # rises steadily
PEAKED = 0.5 + 0.35 * np.exp(-((LAYERS - 10) ** 2) / 8)  # up mid-way, back to chance by the top


def test_rq1_and_rq2_find_a_mid_way_peak_of_failures_that_is_there():
    per = _lens_table(RISING, PEAKED)
    rise, dip = stats.decide(findings.rq1("toy", per, seed=0))
    assert rise.verdict == "supported"
    fail_peak, success_rise = stats.decide(findings.rq2("toy", per, seed=0))
    assert fail_peak.verdict == "supported" and "layer 1" in fail_peak.hypothesis  # a layer in 8..12
    assert 8 <= int(fail_peak.hypothesis.split("(layer ")[1].split(" ")[0]) <= 12
    assert "of interior layers 1..18" in fail_peak.hypothesis
    assert success_rise.verdict == "supported"


def test_rq_tests_do_not_find_shapes_that_are_not_there():
    per = _lens_table(RISING, RISING - 0.2)  # failures rise too, no peak; curves rise monotonically
    _, dip = stats.decide(findings.rq1("toy", per, seed=0))
    assert dip.verdict != "supported"
    fail_peak, _ = stats.decide(findings.rq2("toy", per, seed=0))
    assert fail_peak.verdict != "supported"


def test_rq2_with_one_failure_says_so_instead_of_borrowing_a_peak():
    per = _lens_table(RISING, PEAKED, n_ok=20, n_fail=1)
    fail_peak, success_rise = stats.decide(findings.rq2("toy", per, seed=0))
    assert fail_peak.verdict == success_rise.verdict == "inconclusive" and "only 1 failure" in fail_peak.note


def test_rq3_within_label_earlier_resolution_for_right_answers():
    late = np.where(LAYERS >= 15, 0.9, 0.3)  # wrong clips resolve late
    early = np.where(LAYERS >= 5, 0.9, 0.3)
    per = _lens_table(early, late, noise=0.01)
    (v,) = stats.decide([findings.rq3_clips("toy", per, 2, 0.2, "excess", seed=0)])
    assert v.verdict == "supported" and v.effect > 5
    same = _lens_table(early, early, noise=0.01)
    (w,) = stats.decide([findings.rq3_clips("toy", same, 2, 0.2, "excess", seed=0)])
    assert w.verdict != "supported"
