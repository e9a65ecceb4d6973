"""Experiment configs (YAML under experiments/): what to run, on which model, data, tracks and seeds.

Unknown keys are refused (a typo must not silently fall back to a default). `small` holds the overrides CI uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PatchlabError

ANALYSES = ("lens", "patch", "ground", "enrich", "cue")


@dataclass
class Experiment:
    name: str
    model: str = "patchlab-mini"
    data: str = "../shared/sakura"
    tracks: list[str] = field(default_factory=lambda: ["Gender"])
    analyses: list[str] = field(default_factory=lambda: ["lens", "patch", "ground"])
    formats: list[str] = field(default_factory=lambda: ["mc"])  # logit-lens prompt formats
    prompt: str = "mc"  # prompt format of patching, grounding, enrichment and cue runs
    limit: int | None = None  # N clips per track, balanced over labels
    seed: int = 0
    shard_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None  # e.g. "auto": transformers spreads a large model over the GPUs it sees
    lens: dict = field(default_factory=dict)  # last_text, audio_bins, alpha, weight
    patch: dict = field(default_factory=dict)  # corruption, site, max_batch
    ground: dict = field(default_factory=dict)  # metric, tol, n_boot, level
    enrich: dict = field(default_factory=dict)  # split, coefficients, step
    cue: dict = field(default_factory=dict)  # corruption
    small: dict = field(default_factory=dict)  # overrides for the CI size
    description: str = ""

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad:
            raise PatchlabError(
                f"experiment {self.name!r}: unknown analyses {bad}", f"use some of {', '.join(ANALYSES)}"
            )

    def sized(self, small: bool) -> Experiment:
        """The config at CI size (its `small` overrides applied) or as written."""
        if not small:
            return self
        return from_dict({**dataclasses.asdict(self), **self.small, "small": {}}, f"{self.name} (small)")

    def digest(self) -> str:
        """Hash of everything that changes results (not the device), recorded with results for --resume."""
        d = dataclasses.asdict(self)
        for k in ("device", "device_map", "description", "small", "shard_size"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


KEYS = {f.name for f in dataclasses.fields(Experiment)}
SUB_KEYS = {
    "lens": {"last_text", "audio_bins", "alpha", "weight"},
    "patch": {"corruption", "site", "max_batch"},
    "ground": {"metric", "tol", "n_boot", "level"},
    "enrich": {"split", "coefficients", "step"},
    "cue": {"corruption"},
}


def from_dict(d: dict[str, Any], where: str) -> Experiment:
    """Validate keys (top level and each analysis section) and build the Experiment."""
    unknown = sorted(set(d) - KEYS)
    if unknown:
        raise PatchlabError(f"{where}: unknown key(s) {unknown}", f"allowed keys: {', '.join(sorted(KEYS))}")
    for section, allowed in SUB_KEYS.items():
        bad = sorted(set(d.get(section) or {}) - allowed)
        if bad:
            raise PatchlabError(
                f"{where}: unknown key(s) {bad} in '{section}'", f"allowed: {', '.join(sorted(allowed))}"
            )
    small_bad = sorted(set(d.get("small") or {}) - KEYS)
    if small_bad:
        raise PatchlabError(
            f"{where}: unknown key(s) {small_bad} in 'small'", f"allowed keys: {', '.join(sorted(KEYS))}"
        )
    if "name" not in d:
        raise PatchlabError(f"{where}: no 'name'", "give the experiment a name")
    return Experiment(**d)


def load_config(path: str | Path) -> Experiment:
    """Read an experiment YAML file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise PatchlabError(f"config {path} does not exist", "pass a file under experiments/")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise PatchlabError(f"{path} is not a mapping of keys to values", "see experiments/*.yaml for the format")
    return from_dict(d, str(path))
