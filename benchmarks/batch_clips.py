"""Per-row cost of one clip's region-patching chunks (30 rows each: one per layer) against the same chunks at 60
and 120 rows, which is what putting two or four clips of equal length in one forward would give: the most such
batching could save on this machine.

    python benchmarks/batch_clips.py [SAKURA_DIR]
"""

import sys
import time

import patchlab
from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track
from patchlab.patching import region_specs
from patchlab.patching.engine import _plan, _run_chunk, record_pair

lalm = patchlab.load("patchlab-mini")
pool = load_track(sys.argv[1] if len(sys.argv) > 1 else "../shared/sakura", "Gender")
labels = label_set(lalm, sorted({s.label for s in pool}), "mc")
pair = make_pair(lalm, pool[0], "swap", "mc", labels.index(pool[0].label), pool, 0)
specs = region_specs(lalm.n_layers, ("audio", "text", "final"), "resid_pre")
runs = record_pair(lalm, pair, {"resid_pre"})
chunks = _plan([s for s in specs if s.direction == "denoise"], pair.clean.regions[0], runs.diverge, True, 1000)
for key, chunk in chunks:
    if len(chunk) < 10 or key[0] >= pair.clean.length:
        continue
    out = []
    for k in (1, 2, 4):
        c = sorted(chunk * k, key=lambda s: s.layer)
        _run_chunk(lalm, pair, runs, c, True, key)
        t, n = time.perf_counter(), 3
        for _ in range(n):
            _run_chunk(lalm, pair, runs, c, True, key)
        out.append((len(c), (time.perf_counter() - t) / n / len(c) * 1000))
    rows = ", ".join(f"{r} rows {ms:.2f} ms/row" for r, ms in out)
    print(f"chunk from position {key[0]} ({pair.clean.length - key[0]} positions computed): {rows}")
