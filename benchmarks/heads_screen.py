"""Listening heads, exact against screened: per clip, every head of every layer knocked out exactly (the knockout
engine, batched and resumed at each head's layer) against attribution patching over heads plus the top N verified
exactly, with one plain forward as the floor; and how far the screen agrees with the exact ranking.

    python benchmarks/heads_screen.py [MODEL] [SAKURA_DIR] [CLIPS] [N]
"""

import sys
import time

import numpy as np
import torch
from scipy import stats

import patchlab
from patchlab.data import build_prompt, label_set, load_clip, load_track
from patchlab.patching.attribution import head_attribution
from patchlab.patching.knockout import KnockoutSpec, knockout

model, data = (sys.argv[1:3] + ["patchlab-mini", "../shared/sakura"][len(sys.argv[1:3]) :])[:2]
clips, top = int(sys.argv[3]) if len(sys.argv) > 3 else 4, int(sys.argv[4]) if len(sys.argv) > 4 else 20
lalm = patchlab.load(model)
pool = load_track(data, "Gender")
labels = label_set(lalm, sorted({s.label for s in pool}), "mc")
layers = list(range(lalm.n_layers))
every = [KnockoutSpec(la, la + 1, "final", "audio", (h,)) for la in layers for h in range(lalm.n_heads)]
cost = {"forward": 0.0, "exact": 0.0, "screened": 0.0}
rho, overlap = [], []
for s in load_track(data, "Gender", limit=clips):
    batch = lalm.prepare(load_clip(lalm, s.path), lalm.sampling_rate, build_prompt(s, "mc"), id=s.id, label=s.label)
    truth = labels.index(s.label)
    lalm.forward(batch)  # warm: the audio encoder's memo serves every path alike
    t = time.perf_counter()
    with torch.no_grad():
        lalm.forward(batch)
    cost["forward"] += time.perf_counter() - t
    lalm.run_memo.clear()  # each path records its own clean run
    t = time.perf_counter()
    exact = knockout(lalm, [batch], every, labels.token_ids, [truth], progress=False)
    cost["exact"] += time.perf_counter() - t
    lalm.run_memo.clear()
    t = time.perf_counter()
    est = head_attribution(lalm, batch, layers, "final", "audio", labels.token_ids, truth).numpy().ravel()
    chosen = np.argsort(est)[:top]  # the largest estimated drops
    knockout(lalm, [batch], [every[i] for i in chosen], labels.token_ids, [truth], progress=False)
    cost["screened"] += time.perf_counter() - t
    exact = exact.assign(h=exact["heads"].astype(int)).sort_values(["start", "h"])["logit_diff_change"].to_numpy()
    rho.append(stats.spearmanr(est, exact).statistic)
    overlap.append(len(set(chosen[:5]) & set(np.argsort(exact)[:5])) / 5)
n = len(rho)
print(f"{model}: {len(every)} heads, {n} clips; seconds per clip")
print(f"  one forward (floor)          {cost['forward'] / n:8.3f}")
print(f"  every head knocked out       {cost['exact'] / n:8.3f}  ({cost['exact'] / cost['forward']:.0f}x the floor)")
print(
    f"  AtP + top {top} verified       {cost['screened'] / n:8.3f}  ({cost['screened'] / cost['forward']:.0f}x the "
    f"floor; {cost['exact'] / cost['screened']:.1f}x faster than every head)"
)
print(
    f"  AtP vs exact over all heads: Spearman {np.mean(rho):.3f} (per clip {min(rho):.3f}..{max(rho):.3f}); "
    f"top 5 shared {np.mean(overlap):.2f}"
)
