"""`make results`: docs/results.md rendered from the kept full-size runs, every number recomputed from their stored
tables (patchlab.kept) -- nothing typed by hand, so the doc cannot go stale (tests/test_results.py fails when the
committed doc differs from what the tables give).

    python tools/results.py                       # recompute every kept run: its pins, docs/results.md, its plots
    python tools/results.py --check               # exit 1 if docs/results.md differs from what the tables give
    python tools/results.py keep NAME RUN_FOLDER  # store a finished run as experiments/results/NAME/
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from patchlab.io import write_json
from patchlab.kept import keep, recompute, replicate
from patchlab.provenance import versions

ROOT = Path(__file__).resolve().parents[1]
SAKURA = ROOT.parent / "shared" / "sakura"
KEPT = ROOT / "experiments" / "results"
DOC = ROOT / "docs" / "results.md"
# name -> (title, the command that made it, the plots copied into docs/img as <name>_<plot>); a "replicate_" name is
# the kept run after it, its clips dealt into PARTS parts (patchlab.kept.replicate: no model)
RUNS = {
    "cross_model": (
        "Two real models compared: patchlab-mini vs patchlab-mini-qformer (24 clips per track, same clips)",
        "patchlab run experiments/cross_model.yaml --out runs/cross_model",
        ["compare_grounding_Gender", "compare_grounding_Language"],
    ),
    "audiolens_findings": (
        "AudioLens' findings, tested: the whole Gender and Language dev tracks",
        "patchlab run experiments/audiolens_findings.yaml --out runs/audiolens_findings",
        ["knockout_Language", "grounding_Gender", "encoder_probe_Language", "answer_curves_Gender_direct"],
    ),
    "listening_heads": (
        "Listening heads: one attention head at a time knocked out (final → audio), every head of every layer",
        "patchlab run experiments/listening_heads.yaml --out runs/listening_heads",
        ["heads_Gender", "heads_Language"],
    ),
    "steering": (
        "Steering toward the audio: the audio − silence direction added at the final position, held-out clips",
        "patchlab run experiments/steering.yaml --out runs/steering",
        ["steering_Gender", "steering_Language"],
    ),
    "steering_label": (
        "Steering along a label direction (one label's mean state − the others'), each held-out clip toward its label",
        "patchlab run experiments/steering_label.yaml --out runs/steering_label",
        ["steering_Gender", "steering_Language"],
    ),
    "steering_cue": (
        "Steering away from a conflicting text cue (plain prompt − cued prompt), held-out clips under their cue",
        "patchlab run experiments/steering_cue.yaml --out runs/steering_cue",
        ["steering_Gender", "steering_Language"],
    ),
    "listening_heads_qformer": (
        "Listening heads of patchlab-mini-qformer: every head screened by attribution patching, the top 20 verified",
        "patchlab run experiments/listening_heads_qformer.yaml --out runs/listening_heads_qformer",
        ["heads_Gender", "heads_Language"],
    ),
    "steering_qformer": (
        "Steering patchlab-mini-qformer toward the audio (audio − silence direction), held-out clips",
        "patchlab run experiments/steering_qformer.yaml --out runs/steering_qformer",
        ["steering_Gender", "steering_Language"],
    ),
    "tuned_lens": (
        "The tuned lens beside the logit lens: patchlab-mini, every Gender and Language clip",
        "patchlab run experiments/tuned_lens.yaml --out runs/tuned_lens",
        ["tuned_lens_Gender", "tuned_lens_Language"],
    ),
    "tuned_lens_qformer": (
        "The tuned lens beside the logit lens: patchlab-mini-qformer, every Gender and Language clip",
        "patchlab run experiments/tuned_lens_qformer.yaml --out runs/tuned_lens_qformer",
        ["tuned_lens_Gender", "tuned_lens_Language"],
    ),
    "no_audio_control": (
        "Does the model answer what it cannot have heard? The audio replaced by silence or noise, every track",
        "patchlab run experiments/no_audio_control.yaml --out runs/no_audio_control",
        ["control_Gender", "control_Animal"],
    ),
    "phonetic_grounding": (
        "Question 2: the phonetic Letter track against Language on patchlab-mini-phonetic (every clip of both)",
        "patchlab run experiments/phonetic_grounding.yaml --out runs/phonetic_grounding",
        ["knockout_Letter", "knockout_Language", "grounding_Letter"],
    ),
    "no_audio_control_phonetic": (
        "Question 1 on patchlab-mini-phonetic: the audio replaced by silence or noise, every track and Letter",
        "patchlab run experiments/no_audio_control_phonetic.yaml --out runs/no_audio_control_phonetic",
        ["control_Letter", "control_Language"],
    ),
    "replicate_audiolens_findings": (
        "Do the AudioLens verdicts replicate? The same run's clips in two disjoint halves",
        "patchlab replicate runs/audiolens_findings --out runs/replicate --parts 2",
        [],
    ),
}
PARTS = 2
# What a run's verdicts mean, in words (no numbers: every number on the page comes from the tables)
NOTES: dict[str, str] = {
    "no_audio_control_phonetic": (
        "Question 1 on patchlab-mini-phonetic, Letter beside Language. With the audio replaced by silence the model "
        "still answers, and names one label for every clip (its accuracy is the label prior: a guess). It is hardly "
        "less sure of that guess than of its answers on real audio, and the guess is on top from the first layers, "
        "where right answers on real audio form in the last ones: the hypothesis that an unheard answer forms later "
        "is refuted, it forms earlier, as a default the prompt alone sets. Noise makes the letter answers much less "
        "sure, not the language answers. So a confident answer is no sign that the model heard: the answer layer is."
    ),
    "phonetic_grounding": (
        "Question 2 on patchlab-mini-phonetic, the Letter track's 8 held-out speakers against SAKURA's Language "
        "clips (other speakers: no Language clips of the same speakers exist at a useful size). Both answers are "
        "read from the audio at the final position: blocking its attention to the audio costs each a large share of "
        "its log-probability. The phonetic answer depends on that attention less than the semantic one, and it is "
        "read out at an earlier share of the depth, so the 'querying the audio directly' pattern holds for a "
        "phonetic attribute, but weaker and earlier. Caveats: one small model whose SAKURA gender fell (its card), "
        "independent clips rather than the same speakers, and a log-probability loss that also depends on how sure "
        "each clean answer is. Whether a model with a transcript answers letters from it is what "
        "experiments/phonetic_models.yaml asks of patchlab-mini-qformer-phonetic (committed, Letter 39.4%; pinned "
        "at CI size, not yet run at full size); Whisper's transcription of a letter's name is rarely the letter "
        "(65 of 632 training clips)."
    ),
    "steering_label": (
        "A label's direction does carry the label: added at the final position it promotes each held-out clip's "
        "own label, most strongly in the last layers (where the direction is closest to the unembedding of the "
        "answer) and, for Gender, from early layers on; for Language the middle layers carry no usable direction. "
        "This is the positive control the audio − silence direction lacks: the steering interface moves answers when "
        "the direction is right."
    ),
    "steering_cue": (
        "Averaging away a conflicting cue does not bring the audio back: the mean of (plain − cued) over clips whose "
        "cues name different labels is no clip's way back, and added to a clip under its own cue it lowers the "
        "right answer further in the middle layers. A cue-specific direction (per cued label) would be the next test."
    ),
    "tuned_lens": (
        "The tuned lens reads the model's final distribution far more closely than the logit lens at every tested "
        "layer, on both tracks. It does not resolve the attributes much earlier: the critical layer of the "
        "label-balanced information score (AudioLens' definition, immune to the label mix) moves earlier by more than "
        "the smallest effect that matters only for Gender, and each clip's critical layer of its p(true) curve moves "
        "later for Gender: under the logit lens a clip whose label the early layers happen to favour crosses the "
        "chance threshold early with no information, which the balanced score does not count. So AudioLens' "
        "critical layers, read through the logit lens, are not artefacts of its bad early read-out on this model. "
        "AudioLens' RQ1-RQ3 read through each lens are listed side by side: no verdict flips between supported and "
        "refuted, a few move between decided and inconclusive, and the tuned lens refutes RQ3 (clips answered "
        "right resolve earlier) more strongly."
    ),
    "tuned_lens_qformer": (
        "The same comparison on the Q-Former model, with its own translators (trained on the same synthetic clips): "
        "again a far closer read-out at every tested layer, again no earlier resolution beyond the smallest effect "
        "that matters (the balanced critical layer moves by about a layer or less), again later per clip for Gender."
    ),
}


def recompute_all(into: Path) -> dict[str, tuple[dict, Path]]:
    """Each kept run's summary recomputed from its stored tables into `into/<name>` (and its replication)."""
    done = {}
    for name in RUNS:
        source = name.removeprefix("replicate_")
        if not (KEPT / source).is_dir():
            continue
        out = into / name
        if name != source:
            done[name] = (replicate(KEPT / source, out, PARTS, SAKURA), out)
        else:
            done[name] = (recompute(KEPT / name, out, SAKURA), out)
    return done


def f(x, digits: int = 3) -> str:
    """A number as the doc prints it, fixed-point ('—' when missing)."""
    if x is None or x != x:
        return "—"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:.{digits}f}"


def pval(x) -> str:
    """A p-value: three decimals, or two significant digits below 0.001."""
    if x is None or x != x:
        return "—"
    return f"{x:.1e}" if x < 1e-3 else f"{x:.3f}"


def ci(x, lo, hi, digits: int = 3) -> str:
    return f"{f(x, digits)} [{f(lo, digits)}, {f(hi, digits)}]"


def table(head: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows] + [""]


def counts(verdicts: list[dict]) -> str:
    findings = [v for v in verdicts if v.get("kind") != "sanity"]
    told = ", ".join(f"{sum(v['verdict'] == k for v in findings)} {k}"
                     for k in ("supported", "refuted", "negligible", "inconclusive"))  # fmt: skip
    sanity = len(verdicts) - len(findings)
    return f"**{told}** (of {len(findings)} findings; {sanity} sanity check(s) reported apart)."


def verdict_rows(verdicts: list[dict]) -> list[str]:
    rows = []
    for v in sorted(verdicts, key=lambda v: v.get("kind") == "sanity"):
        note = f" ({v['note']})" if v.get("note") else ""
        rows.append([v["track"], v["hypothesis"], v.get("kind", "finding"), f"**{v['verdict']}**{note}",
                     ci(v["effect"], v["ci_lo"], v["ci_hi"]), f(v.get("min_effect")), pval(v["p_corrected"]),
                     v["n"], f(v.get("n_needed"), 0)])  # fmt: skip
    head = ["track", "hypothesis", "kind", "verdict", "effect [95% CI]", "smallest effect", "p (Holm)", "n",
            "n for a verdict"]  # fmt: skip
    return table(head, rows)


def lens_rows(summary: dict) -> list[str]:
    rows = []
    for track, t in summary["tracks"].items():
        for fmt, s in t.get("lens", {}).items():
            wins = s["one_label_wins_layers"]
            rows.append([track, fmt, s["n_samples"], f(s["answer_accuracy"]),
                         ci(s["accuracy_last_layer"], s["accuracy_lo"], s["accuracy_hi"]),
                         f(s["balanced_accuracy_last_layer"]), f(s["rank_score_last_layer"]),
                         ci(s["critical_layer"], s["critical_layer_lo"], s["critical_layer_hi"], 1),
                         s["clips_never_above_chance"],
                         f"{len(wins)} ({wins[0]}–{wins[-1]})" if wins else "none"])  # fmt: skip
    head = [
        "track",
        "format",
        "clips",
        "answer acc.",
        "lens acc. (last layer) [95% CI]",
        "balanced acc.",
        "rank score",
        "critical layer [95% CI]",
        "clips never above chance",
        "layers where one label wins",
    ]
    return table(head, rows)


def grounding_rows(summary: dict) -> list[str]:
    rows = []
    for track, t in summary["tracks"].items():
        g = t.get("grounding")
        if g:
            rows.append([track, g["n_samples"], ci(g["delta_audio"], g["delta_audio_lo"], g["delta_audio_hi"]),
                         ci(g["delta_text"], g["delta_text_lo"], g["delta_text_hi"]),
                         ci(g["delta_final"], g["delta_final_lo"], g["delta_final_hi"]),
                         ci(g["share"], g["share_lo"], g["share_hi"]),
                         ci(g["handover_layer"], g["handover_lo"], g["handover_hi"], 0), g["dropped"]])  # fmt: skip
    head = ["track", "clips", "Δ audio [95% CI]", "Δ text [95% CI]", "Δ final [95% CI]", "S [95% CI]",
            "handover layer [95% CI]", "clips dropped"]  # fmt: skip
    return table(head, rows) if rows else []


def knockout_rows(summary: dict) -> list[str]:
    rows = [[track, k["knockout"], k["start"], ci(k["logit_diff_change"], k["lo"], k["hi"], 2),
             f(k["acc_change"], 2), k["n"]]
            for track, t in summary["tracks"].items() for k in t.get("knockout", [])]  # fmt: skip
    head = ["track", "knockout", "from layer", "Δ logit difference [95% CI]", "Δ accuracy", "n"]
    return table(head, rows) if rows else []


def other_rows(summary: dict) -> list[str]:
    lines = []
    for track, t in summary["tracks"].items():
        e, p = t.get("enrichment"), t.get("encoder_probe")
        if e:
            lines.append(f"- {track} enrichment: {e['early']} → {e['deep']} (c = {e['c']}) chosen on "
                         f"{e['search_samples']} clips; held-out accuracy {f(e['heldout_accuracy_base'])} → "
                         f"{f(e['heldout_accuracy_enriched'])} on {e['heldout_samples']} clips.")  # fmt: skip
        if p and p.get("best") is not None:
            acc = p["balanced_accuracy"]
            lines.append(f"- {track} encoder probe: balanced accuracy {f(max(a for a in acc if a is not None))} at "
                         f"encoder layer {p['best']} (chance {f(p['chance'])}; saturation layer "
                         f"{p['saturation_layer']} of 0–{len(acc) - 1}; {p['folds']}-fold).")  # fmt: skip
    return lines + [""] if lines else []


def comparison_rows(summary: dict) -> list[str]:
    rows = []
    for key, t in summary["tracks"].items():
        track, model = key.split(" · ")
        lens = next(iter(t.get("lens", {}).values()), {})
        g = t.get("grounding", {})
        per = summary["comparison"][track]["per_model"].get(model, {})
        acc = ci(lens.get("accuracy_last_layer"), lens.get("accuracy_lo"), lens.get("accuracy_hi"), 2)
        rows.append([track, model, acc,
                     ci(lens.get("critical_layer"), lens.get("critical_layer_lo"), lens.get("critical_layer_hi"), 1),
                     f(per.get("delta_audio_first"), 2), f(per.get("delta_transcript_first"), 2),
                     ci(g.get("share"), g.get("share_lo"), g.get("share_hi"), 2)])  # fmt: skip
    head = ["track", "model", "lens acc. (final, last layer) [95% CI]", "critical layer [95% CI]",
            "Δ audio at the first layer", "Δ transcript at the first layer", "S [95% CI]"]  # fmt: skip
    lines = table(head, rows)
    for track, comp in summary["comparison"].items():
        layers = comp.get("layers", [])
        if not layers:
            continue
        cols = [c for c in layers[0] if c.startswith("delta_") and "[" in c]
        lines += [f"{track}, per layer (means over the clips; the last columns: Δ audio of the second model minus the "
                  "first's, paired by clip, with Holm-corrected p):", ""]  # fmt: skip
        lines += table(["layer", *cols, "Δ audio b − a [95% CI]", "p (Holm)"],
                       [[r["layer"], *(f(r[c], 2) for c in cols), ci(r["delta_audio_b_minus_a"], r["lo"], r["hi"], 2),
                         pval(r["p_holm"])] for r in layers])  # fmt: skip
    return lines


def heads_rows(summary: dict) -> list[str]:
    rows = [[track, ", ".join(h["top"]), h["selection_clips"], h["held_out_clips"],
             ci(h["top_drop_held_out"], h["top_drop_lo"], h["top_drop_hi"]),
             ci(h["layers_drop_held_out"], h["layers_drop_lo"], h["layers_drop_hi"])]
            for track, t in summary["tracks"].items() if (h := t.get("heads"))]  # fmt: skip
    head = ["track", "top heads (layer.head, chosen on the selection clips)", "selection clips", "held-out clips",
            "top heads' drop (held out) [95% CI]", "their whole layers' drop (held out) [95% CI]"]  # fmt: skip
    return table(head, rows) if rows else []


def steering_rows(summary: dict) -> list[str]:
    rows = [[track, c["layer"], f(c["alpha"], 1), c["n"],
             ci(c["logit_diff_change"], c["logit_diff_change_lo"], c["logit_diff_change_hi"], 2),
             ci(c["acc_change"], c["acc_change_lo"], c["acc_change_hi"], 2)]
            for track, t in summary["tracks"].items() if "steering" in t for c in t["steering"]["curves"]]  # fmt: skip
    head = ["track", "layer", "alpha", "held-out clips", "Δ logit difference [95% CI]", "Δ accuracy [95% CI]"]
    return table(head, rows) if rows else []


def tuned_rows(summary: dict) -> list[str]:
    lines = []
    for track, t in summary["tracks"].items():
        e = t.get("tuned")
        if not e:
            continue
        rows = []
        for lens in ("logit", "tuned"):
            x = e[lens]
            rows.append([lens, ci(x["balanced_critical_layer"], x["balanced_critical_layer_lo"],
                                  x["balanced_critical_layer_hi"], 1),
                         ci(x["clip_critical_layer"], x["clip_critical_layer_lo"], x["clip_critical_layer_hi"], 1),
                         x["clips_never_above_chance"],
                         ci(x["accuracy_last_layer"], x["accuracy_lo"], x["accuracy_hi"])])  # fmt: skip
        lines += [f"{track} ({e['n_clips']} clips), each lens at the final position:", ""]
        lines += table(["lens", "critical layer, label-balanced information score [95% CI]",
                        "clips' critical layer (p(true)), mean [95% CI]", "clips never above chance",
                        "accuracy, last layer [95% CI]"], rows)  # fmt: skip
        by = {(c["lens"], c["layer"]): c for c in e["curves"]}
        layers = sorted({c["layer"] for c in e["curves"]})
        rows = [[la, *(ci(by[k, la]["kl"], by[k, la]["kl_lo"], by[k, la]["kl_hi"], 2) for k in ("logit", "tuned")),
                 *(f(by[k, la]["balanced_score"]) for k in ("logit", "tuned"))]
                for la in layers if la % 3 == 0 or la == layers[-1]]  # fmt: skip
        lines += [f"{track}, per layer (every third): KL from the final distribution in nats, mean over clips:", ""]
        lines += table(["layer", "KL, logit lens [95% CI]", "KL, tuned lens [95% CI]",
                        "balanced information score, logit", "balanced information score, tuned"], rows)  # fmt: skip
    return lines


def control_rows(summary: dict) -> list[str]:
    rows = []
    for track, t in summary["tracks"].items():
        c = t.get("control")
        for cond, e in (c or {}).items():
            if cond != "prior":
                rows.append([track, cond, e["n"], ci(e["accuracy"], e["accuracy_lo"], e["accuracy_hi"]),
                             f(c["prior"]), ci(e["p_answer"], e["p_answer_lo"], e["p_answer_hi"]),
                             ci(e["answer_layer"], e["answer_layer_lo"], e["answer_layer_hi"], 1)])  # fmt: skip
    head = ["track", "audio", "clips", "accuracy [95% CI]", "constant guess", "p of the answer [95% CI]",
            "answer layer [95% CI]"]  # fmt: skip
    return table(head, rows) if rows else []


def contrast_rows(summary: dict) -> list[str]:
    """The two-track contrast per track (one model's run), or per model and track (a cross-model run)."""
    c = summary.get("contrast")
    if not c:
        return []
    per_model = {"": c} if "tracks" in c else {f"{m}: ": v for m, v in c.items()}
    rows = [[f"{m}{t}", v[t]["n"], ci(v[t]["logprob_loss"], v[t]["logprob_loss_lo"], v[t]["logprob_loss_hi"], 2),
             ci(v[t]["critical_depth"], v[t]["critical_depth_lo"], v[t]["critical_depth_hi"], 2)]
            for m, v in per_model.items() for t in v["tracks"]]  # fmt: skip
    window = next(iter(per_model.values()))["knockout"]
    head = ["track", "clips", f"log-prob lost, {window} [95% CI]", "critical layer / depth [95% CI]"]
    return table(head, rows)


def replication_rows(summary: dict) -> list[str]:
    lines = summary["replication"]
    status = {}
    for r in lines:
        status[r["replication"]] = status.get(r["replication"], 0) + 1
    said = ", ".join(f"{n} {k}" for k, n in sorted(status.items()))
    rows = [[r["hypothesis"], r["kind"], f"**{r['replication']}**", r["verdicts"], r["effects"], r["n"]] for r in lines]
    return [f"{len(lines)} hypotheses over {summary['parts']} parts: {said}.", ""] + table(
        ["hypothesis (as in part 1)", "kind", "replication", "verdicts", "effects [95% CI]", "n"], rows
    )


INTRO = """\
# Results on patchlab-mini and the SAKURA dev split

Rendered by `make results` (tools/results.py) from the tables of the runs kept under `experiments/results/`: every
number below is recomputed from those tables (`patchlab.kept.recompute`), and `tests/test_results.py` fails when this
page differs from what they give. patchlab-mini and patchlab-mini-qformer are small models trained here on synthetic
speech and human letter/word recordings (their accuracies: `patchlab/mini/MODEL_CARD.md`,
`patchlab/mini/MODEL_CARD_QFORMER.md`): these numbers show what patchlab measures on a real (if weak) model, not what
a 7B LALM does.

How to read a verdict: every test is one-sided in the hypothesis' direction, p is Holm-corrected over the run's
findings, the interval is a two-sided 95% interval of the effect; `supported` needs corrected p <= 0.05 and an
interval that clears the hypothesis' smallest effect that matters, `negligible` an interval inside it, `refuted` an
interval wholly on the other side; fewer than 8 clips is always `inconclusive`, and an inconclusive finding says how
many clips would decide it at the observed effect. Checks that hold by construction on the model (a patch that
recreates the clean run) are sanity checks, listed apart. (docs/statistics.md: the tests, the smallest effects, the
measured coverage of each interval.)
"""


def render(done: dict[str, tuple[dict, Path]]) -> str:
    """docs/results.md from the recomputed summaries."""
    lines = [INTRO]
    for name, (summary, _) in done.items():
        title, command, plots = RUNS[name]
        lines += [f"## {title}", "", "```bash", command, "```", ""]
        lines += [NOTES[name], ""] if name in NOTES else []
        if "replication" in summary:
            lines += replication_rows(summary)
            continue
        lines += [counts(summary["verdicts"]), ""] + verdict_rows(summary["verdicts"])
        if "comparison" in summary:
            lines += comparison_rows(summary) + contrast_rows(summary)
        elif any("heads" in t for t in summary["tracks"].values()):
            lines += ["Top heads per track (drops of the answer's logit difference, means over the held-out clips):",
                      ""] + heads_rows(summary)  # fmt: skip
        elif any("steering" in t for t in summary["tracks"].values()):
            lines += ["The answer's change per layer and alpha (steered minus unsteered, held-out clips):", ""]
            lines += steering_rows(summary)
        elif any("tuned" in t for t in summary["tracks"].values()):
            lines += tuned_rows(summary)
        elif any("control" in t for t in summary["tracks"].values()):
            lines += ["Per track and audio (the last layer's answer over the track's label set; the answer layer: the "
                      "first layer from which the final answer stays on top):", ""] + control_rows(summary)  # fmt: skip
        else:
            lines += ["Lens per track and prompt format:", ""] + lens_rows(summary)
            lines += ["Grounding (normalized restorations over the patched layers, 1 = clean):", ""]
            lines += grounding_rows(summary)
            lines += ["Attention knockout (blocked from the layer to the top; change of the answer's logit "
                      "difference and accuracy):", ""] + knockout_rows(summary)  # fmt: skip
            lines += other_rows(summary)
            lines += contrast_rows(summary)
        lines += [f"![{p}](img/{name}_{p}.png)" for p in plots] + ([""] if plots else [])
    return "\n".join(lines).rstrip() + "\n"


def pin(name: str, summary: dict) -> Path:
    """Write a kept run's recomputed summary, with the library versions that computed it, as its pins."""
    summary = {**summary, "data": "../shared/sakura"}  # the folder beside the checkout, not this machine's path
    return write_json(KEPT / f"{name}.json", {**summary, "versions": versions()})


def main(argv: list[str]) -> int:
    if argv[:1] == ["keep"]:
        name, run = argv[1], Path(argv[2])
        print(f"{name}: {len(keep(run, KEPT / name))} files kept in {(KEPT / name).relative_to(ROOT)}")
        argv = []
    with tempfile.TemporaryDirectory() as tmp:
        done = recompute_all(Path(tmp))
        text = render(done)
        if "--check" in argv:
            same = DOC.read_text() == text
            print("docs/results.md is what the kept tables give" if same else "docs/results.md differs: make results")
            return 0 if same else 1
        for name, (summary, out) in done.items():
            pin(name, summary)
            for plot in RUNS[name][2]:
                shutil.copyfile(out / "plots" / f"{plot}.png", ROOT / "docs" / "img" / f"{name}_{plot}.png")
        DOC.write_text(text)
    print(f"pinned {', '.join(done)}; wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
