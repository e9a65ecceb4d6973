"""The analyses an experiment can run, one module each, in the order they merge (and the report lists them): the
registry the config schema, the runner, the report and the summary take what they need from.

`shard_tables` computes one shard's rows for every analysis the experiment names; `merge` turns all shards' rows
into tables, plots, verdicts, summary.json and report.html.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .. import verdicts as V
from ..data import build_prompt, label_set, load_clip, load_track, verbalize
from ..errors import PatchlabError
from ..io import write_json, write_table
from ..models.base import HookedLALM
from ..report import build_report
from .base import SKIP_COLUMNS, Analysis, Merged, ShardContext, pair_of, shown, skip_row
from .contrast import Contrast
from .control import Control
from .cue import Cue
from .enrich import Enrich
from .findings import Findings
from .ground import Ground
from .heads import Heads
from .knockout import Knockout
from .lens import Lens
from .patch import Patch
from .probe import Probe
from .steer import Steer
from .transcribe import Transcribe
from .tuned import Tuned

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this registry
    from ..experiment import Experiment

REGISTRY: tuple[Analysis, ...] = (
    Lens(), Tuned(), Patch(), Ground(), Enrich(), Knockout(), Heads(), Steer(), Probe(), Findings(), Cue(), Control(),
    Transcribe(), Contrast(),
)  # fmt: skip
DEFAULT = ["lens", "patch", "ground"]  # what an experiment runs when it names no analyses


def usable(lalm: HookedLALM, exp: Experiment, samples: list, pool: list, labels) -> tuple[list, dict, dict, list]:
    """Samples whose audio loads, their waveforms, and the pairs that can be built (patching analyses).

    A clip that cannot be loaded is left out of everything; one whose pair cannot be built only out of the
    patching analyses (it keeps its lens rows). Each becomes a skipped row (track, sample, path, analysis, error, fix).
    """
    ok, waves, pairs, skipped = [], {}, {}, []
    needs_pair = any(a.pairs and a.wanted(exp) for a in REGISTRY)
    for s in samples:
        try:
            waves[s.id] = load_clip(lalm, s.path)
        except PatchlabError as e:
            skipped.append(skip_row(s.track, s.id, shown(s), e, "all"))
            continue
        ok.append(s)
        if needs_pair:
            try:
                pairs[s.id] = pair_of(lalm, exp, s, exp.patch.corruption, pool, labels)
            except PatchlabError as e:
                skipped.append(skip_row(s.track, s.id, shown(s), e, "patch"))
    return ok, waves, pairs, skipped


def shard_tables(
    lalm: HookedLALM, exp: Experiment, shard, first: Callable[[str], pd.DataFrame] | None = None
) -> dict[str, pd.DataFrame]:
    """Everything one shard contributes, as tidy tables keyed by name (broken samples: `skipped` rows). A
    second-phase shard (`shard.phase`) holds the clips it names and runs that phase's analysis alone (`first` reads
    its track's finished first-phase tables)."""
    pool = load_track(exp.root(shard.track), shard.track)
    track_labels = sorted({s.label for s in pool})
    labels = label_set(lalm, track_labels, exp.prompt, exp.label_space)
    samples = exp.samples(shard.track)
    samples = [s for s in samples if s.id in shard.samples] if shard.phase else samples[shard.start : shard.stop]
    samples, waves, pairs, skipped = usable(lalm, exp, samples, pool, labels)
    ctx = ShardContext(lalm, exp, shard.track, pool, track_labels, labels, samples, waves, pairs, skipped, first)
    if shard.phase:
        owner = next(a for a in REGISTRY if a.second_phase == shard.phase)
        out = owner.second(ctx, dict(zip(shard.samples, shard.regions)))
    else:
        out = {}
        for a in REGISTRY:
            if a.wanted(exp):
                out.update(a.shard(ctx))
    out["skipped"] = pd.DataFrame(ctx.skipped, columns=SKIP_COLUMNS)
    return out


def second_phases(
    exp: Experiment, track: str, first: Callable[[str], pd.DataFrame]
) -> list[tuple[str, dict[str, tuple]]]:
    """Each analysis' second phase for `track` (phase name, clip -> payload), from its finished first phase."""
    return [(a.second_phase, extra) for a in REGISTRY if a.second_phase and (extra := a.plan_second(exp, track, first))]


def check(exp: Experiment) -> None:
    """Every analysis the experiment runs refuses what it cannot use, before any work."""
    for a in REGISTRY:
        if a.wanted(exp):
            a.check(exp)


def inputs(exp: Experiment) -> dict[str, str]:
    """The files besides model, data and code the experiment's rows depend on (name -> digest)."""
    return {k: v for a in REGISTRY if a.wanted(exp) for k, v in a.inputs(exp).items()}


def rests_on(exp: Experiment, tables: dict[str, pd.DataFrame]) -> dict:
    """Per track: the clips analysed (n, n per label), the label set and each prompt format's wording."""
    analysed: dict[str, set] = {}
    for name in (name for a in REGISTRY for name in a.clips):
        for track, g in tables.get(name, pd.DataFrame(columns=["track", "sample"])).groupby("track"):
            analysed.setdefault(track, set()).update(map(str, g["sample"]))
    out = {}
    for track in exp.tracks:
        everything = load_track(exp.root(track), track)
        samples = [s for s in everything if s.id in analysed.get(track, set())]
        per_label = pd.Series([s.label for s in samples], dtype=object).value_counts().sort_index()
        labels_here = sorted({s.label for s in samples})
        prompts = {}
        for fmt in dict.fromkeys([*exp.formats, exp.prompt]):
            p = build_prompt(samples[0], fmt) if samples else None
            prompts[fmt] = {"instruction": p.instruction, "answer_starts": p.prefix} if p else {}
        out[track] = {
            "n_clips": len(samples),
            "per_label": {str(k): int(v) for k, v in per_label.items()},
            "labels": sorted({s.label for s in everything}),
            "verbalized": {fmt: [verbalize(la, fmt, exp.label_space) for la in labels_here] for fmt in prompts},
            "prompts": prompts,
        }
    return out


def merge(
    exp: Experiment, tables: dict[str, pd.DataFrame], out: Path, small: bool = False, random_weights: bool = False
) -> dict:
    """Merged tables, plots, verdicts, summary.json and report.html from all shards' rows (each analysis in
    registry order, then the verdicts decided together)."""
    out = Path(out)
    summary: dict = {
        "name": exp.name,
        "model": exp.model,
        "random_weights": random_weights,
        "data": exp.data,
        **({"track_data": exp.track_data} if exp.track_data else {}),
        "synthetic_data": (Path(exp.data) / "SOURCES.tsv").exists(),  # written by patchlab's speech builder
        "small": small,
        "seed": exp.seed,
        "tracks": {},
    }
    m = Merged(exp, tables, out, summary)
    for a in REGISTRY:
        a.merge(m)
    verdict_table = V.table(m.tested)
    for a in REGISTRY:
        a.finish(m)
    write_table(out / "tables" / "verdicts.csv", verdict_table)
    summary["verdicts"] = verdict_table.to_dict(orient="records")
    summary["rests_on"] = rests_on(exp, tables)
    skipped = tables.get("skipped", pd.DataFrame())
    if len(skipped):
        write_table(out / "tables" / "skipped.csv", skipped)
    summary["skipped"] = skipped.to_dict(orient="records")
    if m.n_layers is not None:
        summary["n_layers"] = m.n_layers
    write_json(out / "summary.json", summary)
    build_report(exp, summary, m.figures, out / "report.html")
    return summary
