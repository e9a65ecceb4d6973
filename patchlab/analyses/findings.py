"""AudioLens' research questions RQ1-RQ4 tested on the lens rows (and the knockout and grounding rows): per
(track, format) cell and per track, with the RQ2 curves of right and wrong answers."""

from __future__ import annotations

import pandas as pd

from .. import findings as F
from ..io import write_table
from ..report import plots
from .base import Analysis, Merged


class Findings(Analysis):
    name = "findings"  # its per-clip rows (the model's own answer) are added to the lens rows

    def merge(self, m: Merged) -> None:
        if not self.wanted(m.exp) or "lens" not in m.tables:
            return
        exp, per, knock = m.exp, m.tables["lens"], m.tables.get("knockout")
        alpha, weight, seed = exp.lens.alpha, exp.lens.weight, exp.seed
        cells = []
        for (track, fmt), mine in per.groupby(["track", "format"], sort=False):
            cell, n_labels = f"{track} [{fmt}]", m.label_counts[track]
            m.tested += [(track, v) for v in F.rq1(cell, mine, seed) + F.rq2(cell, mine, seed)]
            m.tested.append((track, F.rq3_clips(cell, mine, n_labels, alpha, weight, seed)))
            cells.append(F.cell_row(track, fmt, mine, n_labels, alpha, weight))
            curves = F.rq2_curves(mine, seed)
            write_table(m.out / "tables" / f"answer_curves_{track}_{fmt}.csv", curves)
            path = plots.answer_curves(curves, m.out / "plots" / f"answer_curves_{track}_{fmt}.png",
                                       f"{cell}: p(true) by the model's answer and label")  # fmt: skip
            m.plot(f"RQ2, successes and failures: {cell}", path)
        m.tested.append(("all", F.rq3_cells(pd.DataFrame(cells), seed)))
        for track in exp.tracks:
            k = knock[knock.track == track] if knock is not None and len(knock) else None
            m.tested += [(track, v) for v in F.rq4(track, k, m.ground_rows.get(track), seed)]
        m.summary["findings"] = {"cells": cells}
