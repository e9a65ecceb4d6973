"""What every analysis is: its options (a section of the experiment config), what it computes per shard, how it
merges the shards' rows into tables, plots, summary and verdicts, and an optional second phase of shards.

A new analysis is one module of this package that subclasses `Analysis` and is listed in the registry
(`patchlab.analyses.REGISTRY`); the config schema, the runner, the report and the summary take what they need
from there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Strict

from ..corrupt import Pair, make_pair
from ..data import LabelSet, Sample
from ..errors import PatchlabError
from ..models.base import HookedLALM, Prompt

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this package's registry
    from ..experiment import Experiment

Int = Annotated[int, Strict()]  # `true` is not the number 1, nor "8" the number 8
Float = Annotated[float, Strict()]  # an int is a float; a bool or a string is not
SKIP_COLUMNS = ["track", "sample", "path", "analysis", "error", "fix"]


class Options(BaseModel):
    """An analysis' section of the experiment config: unknown keys refused, each key's default written once here."""

    model_config = ConfigDict(extra="forbid")


def skip_row(track: str, sample: str, path: str, e: PatchlabError, analysis: str) -> dict:
    """A clip left out of one analysis (a warning now, a row of tables/skipped.csv later)."""
    warnings.warn(f"skipping {track}/{sample} ({analysis}): {e.what}", stacklevel=3)
    return dict(track=track, sample=sample, path=path, analysis=analysis, error=e.what, fix=e.fix)


def shown(s: Sample) -> str:
    """A clip's path as shown in tables: relative to the dataset folder (no machine paths)."""
    try:
        return str(s.path.relative_to(s.root)) if s.root is not None else s.path.name
    except ValueError:
        return s.path.name


def pair_of(lalm: HookedLALM, exp: Experiment, s: Sample, corruption: str, pool: list, labels: LabelSet,
            prompt: Prompt | None = None) -> Pair:  # fmt: skip
    """The clean/corrupted pair of one clip (the experiment's prompt format and seed)."""
    return make_pair(lalm, s, corruption, exp.prompt, labels.index(s.label), pool, exp.seed, prompt=prompt)


def checked_layers(lalm: HookedLALM, layers: list[int] | None, key: str) -> list[int] | None:
    """A config's layer list, refused (naming `key`) if any layer is outside the model."""
    bad = [la for la in layers or () if not 0 <= la < lalm.n_layers]
    if bad:
        raise PatchlabError(f"{key} {bad} are outside 0..{lalm.n_layers - 1}", "list layers of the model")
    return layers


@dataclass
class ShardContext:
    """One shard's clips as every analysis sees them: loaded once, paired once, broken ones already skipped."""

    lalm: HookedLALM
    exp: Experiment
    track: str
    pool: list[Sample]  # the whole track (donors for corruptions)
    track_labels: list[str]
    labels: LabelSet  # the track's labels tokenized for the experiment's prompt format
    samples: list[Sample]  # this shard's clips whose audio loads
    waves: dict[str, Any]
    pairs: dict[str, Pair]  # clean/corrupted pairs of the clips that have one (patching analyses)
    skipped: list[dict] = field(default_factory=list)
    first: Callable[[str], pd.DataFrame] | None = None  # a second-phase shard: its track's first-phase tables

    def prepared(self, s: Sample, prompt: Prompt):
        """The model's input for clip `s` under `prompt`."""
        return self.lalm.prepare(self.waves[s.id], self.lalm.sampling_rate, prompt, id=s.id, label=s.label)

    @property
    def paired(self) -> list[Sample]:
        return [s for s in self.samples if s.id in self.pairs]

    def skip(self, s: Sample, e: PatchlabError, analysis: str) -> None:
        self.skipped.append(skip_row(s.track, s.id, shown(s), e, analysis))


@dataclass
class Merged:
    """The merge of a run's shards: its tables, and what the analyses write into as they merge in registry order."""

    exp: Experiment
    tables: dict[str, pd.DataFrame]
    out: Path
    summary: dict
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tested: list = field(default_factory=list)  # (track, stats.Verdict), in the order the report lists them
    label_counts: dict[str, int] = field(default_factory=dict)  # labels per track (the lens reads the label set)
    ground_rows: dict[str, pd.DataFrame] = field(default_factory=dict)  # grounding per clip and layer, per track
    n_layers: int | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        t = self.tables.get(name)
        return t if t is not None and len(t) else None

    def plot(self, caption: str, path: Path) -> None:
        self.figures.append((caption, path))

    def track_summary(self, track: str) -> dict:
        return self.summary["tracks"].setdefault(track, {})


class Analysis:
    """One analysis. Subclasses set `name` (its key in `analyses:`) and `Options` (its config section, or None),
    and override what they compute: `shard`, `merge`, and optionally `finish`, `plan_second` / `second`."""

    name: ClassVar[str]
    Options: ClassVar[type[Options] | None] = None
    clips: ClassVar[tuple[str, ...]] = ()  # its shard tables whose clips the run rests on (summary's rests_on)
    second_phase: ClassVar[str] = ""  # the name of its second phase's shards, if it has one
    pairs: ClassVar[bool] = False  # its shard stage reads the clips' clean/corrupted pairs (built once per shard)

    def wanted(self, exp: Experiment) -> bool:
        """Whether its per-shard stage runs in `exp`."""
        return self.name in exp.analyses

    def check(self, exp: Experiment) -> None:
        """Refuse what it cannot use before a model loads or a file is written (the run's preflight)."""

    def inputs(self, exp: Experiment) -> dict[str, str]:
        """Files besides the model, data and code that its rows depend on (name -> digest): part of the run's
        identity, so a resumed run refuses to mix rows of other such files."""
        return {}

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """Its rows of one shard (tables keyed by name; skipped clips through `ctx.skip`)."""
        return {}

    def merge(self, m: Merged) -> None:
        """Its merged tables, plots, summary entries and verdicts (appended to `m.tested`)."""

    def finish(self, m: Merged) -> None:
        """After the run's verdicts are decided (Holm over the family): summary entries that quote them."""

    def plan_second(
        self, exp: Experiment, track: str, first: Callable[[str], pd.DataFrame]
    ) -> dict[str, tuple[str, ...]]:
        """Its second phase for `track`, from the track's finished first-phase tables (`first(name)`): the clips
        to compute again, each with its payload (e.g. the regions to patch); empty for none."""
        return {}

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """One second-phase shard's tables (`payload`: clip id -> what `plan_second` asked for it)."""
        raise NotImplementedError(f"{self.name} has no second phase")
