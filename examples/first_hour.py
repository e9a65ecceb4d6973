import patchlab
from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track, track_labels
from patchlab.patching import patch, region_specs, sweep

SAKURA = "../shared/sakura"
lalm = patchlab.load("patchlab-mini")  # or a checkpoint folder, e.g. Qwen2-Audio-7B-Instruct with dtype="bfloat16"
clips = load_track(SAKURA, "Gender", limit=4, seed=0)  # 4 clips: a seeded sample in the track's label mix

res = patchlab.lens(lalm, clips, fmt="direct")  # information scores, critical layers
print("lens accuracy", res.accuracy, "critical layer (final position)", res.summary()["critical_layer"])

labels = label_set(lalm, track_labels(SAKURA, "Gender"), "direct")  # the track's whole label set
pool = load_track(SAKURA, "Gender")  # swap donors: clips of another label
pairs = [make_pair(lalm, c, "swap", "direct", labels.index(c.label), pool=pool) for c in clips]
specs = region_specs(lalm.n_layers, ("audio", "text", "final"), layers=range(0, lalm.n_layers, 3))  # every 3rd
regions = patch(lalm, pairs, specs, labels.token_ids).table
g = patchlab.grounding(regions)  # grounding from the same table: region patching runs once
print(g.per_layer[["layer", "delta_audio", "delta_audio_lo", "delta_audio_hi", "delta_text", "share"]])
print("handover layer", g.overall["handover_layer"], [g.overall["handover_lo"], g.overall["handover_hi"]])

cells = sweep(lalm.n_layers, pairs[0].clean.length, layers=[24])  # one layer, every position
heat = patch(lalm, pairs[:1], cells, labels.token_ids).table
print(heat.pivot_table(index="layer", columns="position", values="logit_diff_restored").round(2))
