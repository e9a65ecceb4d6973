"""Experiment configs (YAML under experiments/): what to run, on which model, data, tracks and seeds.

Every config is checked against a schema (pydantic) before any work: unknown keys are refused (a typo must
not silently fall back to a default), and each value must be of the kind its key takes. `small` holds the
overrides CI uses; the config with them applied is checked too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .data import load_track
from .errors import PatchlabError
from .vocabulary import CORRUPTIONS, FORMATS, LABEL_SPACES, METRICS, REGION_NAMES
from .vocabulary import RECORD_SITES as SITES

ANALYSES = ("lens", "patch", "ground", "enrich", "cue", "knockout", "findings", "probe")
DTYPES = ("float32", "float64", "bfloat16", "float16")


@dataclass
class Experiment:
    name: str
    model: str = "patchlab-mini"
    models: list[str] | None = None  # several models on the same clips: each run under out/models/, then compared
    variant: str | None = None  # a known-truth variant of the model, made by surgery ('blocked:K', 'deaf')
    data: str = "../shared/sakura"
    tracks: list[str] = field(default_factory=lambda: ["Gender"])
    analyses: list[str] = field(default_factory=lambda: ["lens", "patch", "ground"])
    formats: list[str] = field(default_factory=lambda: ["mc"])  # logit-lens prompt formats
    prompt: str = "mc"  # prompt format of patching, grounding, enrichment and cue runs
    limit: int | None = None  # N clips per track: a stratified random sample (seed)
    part: list[int] | None = None  # [i, k]: the i-th of k disjoint seeded parts of each track (patchlab replicate)
    seed: int = 0
    shard_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | None = None  # e.g. "auto": transformers spreads a large model over the GPUs it sees
    trust_remote_code: bool = False  # let the checkpoint's own code run (Qwen-Audio, DeSTA2)
    label_space: str = "auto"  # how labels are tokenized: auto, none (AudioLens: no leading space), space
    lens: dict = field(default_factory=dict)  # last_text, audio_bins, alpha, weight
    patch: dict = field(default_factory=dict)  # corruption, site, max_batch, layers
    ground: dict = field(default_factory=dict)  # metric, tol, n_boot, level, screen, screen_gap, screen_tol
    enrich: dict = field(default_factory=dict)  # split, coefficients, step
    cue: dict = field(default_factory=dict)  # corruption
    knockout: dict = field(default_factory=dict)  # pairs, layers, max_batch
    small: dict = field(default_factory=dict)  # overrides for the CI size
    description: str = ""

    def sized(self, small: bool) -> Experiment:
        """The config at CI size (its `small` overrides applied) or as written."""
        if not small:
            return self
        return from_dict({**dataclasses.asdict(self), **self.small, "small": {}}, f"{self.name} (small)")

    def samples(self, track: str) -> list:
        """The clips of `track` this experiment runs on (its limit, seed and part applied)."""
        return load_track(self.data, track, self.limit, self.seed, tuple(self.part) if self.part else None)

    def options(self, section: str) -> dict[str, Any]:
        """One analysis section (lens, patch, ground, enrich, cue, knockout) as given, with the schema's defaults
        for the keys it leaves out: the one place those defaults live."""
        return _Config.model_fields[section].annotation.model_validate(getattr(self, section)).model_dump()

    def digest(self) -> str:
        """Hash of everything in the config that decides the rows (sharding included; not the device)."""
        d = dataclasses.asdict(self)
        for k in ("device", "device_map", "description", "small"):
            d.pop(k)
        if d["part"] is None:  # the whole data: the digest of every config written before parts existed
            d.pop("part")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


Int = Annotated[int, Strict()]  # `true` is not the number 1, nor "8" the number 8
Float = Annotated[float, Strict()]  # an int is a float; a bool or a string is not


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lens(_Section):
    last_text: Int = Field(5, ge=1)
    audio_bins: Int = Field(10, ge=1)
    alpha: Float = Field(0.2, ge=0)
    weight: Literal["excess", "score"] = "excess"


class _Patch(_Section):
    corruption: Literal[CORRUPTIONS] = "swap"  # type: ignore[valid-type]
    site: Literal[SITES] = "resid_pre"  # type: ignore[valid-type]
    max_batch: Int = Field(64, ge=1)
    layers: list[Int] | None = Field(None, min_length=1)  # region patching at these layers only (default: all)


class _Ground(_Section):
    metric: Literal[METRICS] = "logit_diff"  # type: ignore[valid-type]
    tol: Float = Field(0.05, ge=0)
    n_boot: Int = Field(1000, ge=10)
    level: Float = Field(0.95, gt=0, lt=1)
    # screen every clip by attribution patching and patch this share of them for real (None: all for real)
    screen: Float | None = Field(None, gt=0, le=1)
    # ... and every clip whose clean - corrupt logit difference is below this (its restorations, ratios over a
    # small gap, are the heavy tail of the per-layer means): a take-all stratum, 0 for none
    screen_gap: Float = Field(1.0, ge=0)
    # ... then a second phase: more clips patched per region until every layer's interval half-width is within
    # this (in restoration units; two-phase sampling sized by the first phase's residuals)
    screen_tol: Float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _tol_needs_screen(self) -> _Ground:
        if self.screen_tol is not None and self.screen is None:
            raise ValueError("screen_tol sizes the second phase of screening: give ground.screen too")
        return self


class _Enrich(_Section):
    split: Float = Field(0.5, gt=0, lt=1)
    coefficients: list[Float | Literal["mean"]] = Field(default_factory=lambda: [0.5, 1.0, "mean"], min_length=1)
    step: Int | None = Field(None, ge=1)


class _Cue(_Section):
    corruption: Literal[CORRUPTIONS] = "swap"  # type: ignore[valid-type]


class _Knockout(_Section):
    pairs: list[tuple[Literal[REGION_NAMES], Literal[REGION_NAMES]]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [("final", "audio"), ("text", "audio"), ("final", "text")], min_length=1
    )  # (query, key) regions: block query -> key attention
    layers: list[Int] | None = Field(None, min_length=1)  # block from each of these layers to the top (default: all)
    max_batch: Int = Field(64, ge=1)


class _Config(_Section):
    name: str = Field(min_length=1)
    model: str = Field("patchlab-mini", min_length=1)
    models: list[str] | None = Field(None, min_length=2)
    variant: str | None = None
    data: str = Field("../shared/sakura", min_length=1)
    tracks: list[str] = Field(default_factory=lambda: ["Gender"], min_length=1)
    analyses: list[Literal[ANALYSES]] = Field(default_factory=lambda: ["lens", "patch", "ground"], min_length=1)  # type: ignore[valid-type]
    formats: list[Literal[FORMATS]] = Field(default_factory=lambda: ["mc"], min_length=1)  # type: ignore[valid-type]
    prompt: Literal[FORMATS] = "mc"  # type: ignore[valid-type]
    limit: Int | None = Field(None, ge=1)
    part: list[Int] | None = Field(None, min_length=2, max_length=2)
    seed: Int = Field(0, ge=0)
    shard_size: Int = Field(8, ge=1)
    device: str = "cpu"
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    device_map: str | None = None
    trust_remote_code: Annotated[bool, Strict()] = False  # consent for this config's model(s) only
    label_space: Literal[LABEL_SPACES] = "auto"  # type: ignore[valid-type]
    lens: _Lens = Field(default_factory=_Lens)
    patch: _Patch = Field(default_factory=_Patch)
    ground: _Ground = Field(default_factory=_Ground)
    enrich: _Enrich = Field(default_factory=_Enrich)
    cue: _Cue = Field(default_factory=_Cue)
    knockout: _Knockout = Field(default_factory=_Knockout)
    small: dict = Field(default_factory=dict)
    description: str = ""

    @field_validator("tracks")
    @classmethod
    def _tracks_are_names(cls, tracks: list[str]) -> list[str]:
        """A track is a folder name under `data` (it also names shard folders): no path, no repeats."""
        for t in tracks:
            if not t or t in (".", "..") or t.startswith(".") or any(c in t for c in "/\\\0"):
                raise ValueError(f"track {t!r} is not a folder name: give the name of a folder under `data`")
        repeated = sorted({t for t in tracks if tracks.count(t) > 1})
        if repeated:
            raise ValueError(f"tracks {repeated} are listed twice: every track is run once")
        return tracks

    @field_validator("part")
    @classmethod
    def _part_of_k(cls, part: list[int] | None) -> list[int] | None:
        if part is not None and not (part[1] >= 2 and 0 <= part[0] < part[1]):
            raise ValueError(f"part {part} is not [i, k] with 0 <= i < k and k >= 2")
        return part

    @field_validator("models")
    @classmethod
    def _models_differ(cls, models: list[str] | None) -> list[str] | None:
        repeated = sorted({m for m in models or [] if models.count(m) > 1})
        if repeated:
            raise ValueError(f"models {repeated} are listed twice: compare different models")
        return models


KEYS = set(_Config.model_fields)


def _check(d: dict[str, Any], where: str) -> None:
    """Refuse a config the schema does not take, naming the key, the value given and what the key takes."""
    try:
        _Config.model_validate(d)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            loc = [str(p) for p in err["loc"]]
            section = loc[0] if len(loc) > 1 and loc[0] in _Config.model_fields else ""
            model = _Config.model_fields[section].annotation if section else _Config
            allowed = sorted(getattr(model, "model_fields", KEYS))
            inside = f" in '{section}'" if section else ""
            raise PatchlabError(
                f"{where}: unknown key(s) {[loc[-1]]}{inside}",
                f"allowed keys{inside}: {', '.join(allowed)}",
            ) from None
        if err["type"] == "missing":
            raise PatchlabError(f"{where}: no {key!r}", f"give the experiment a {key}") from None
        if err["type"] == "value_error":  # a rule across keys of a section: its message says what to give
            raise PatchlabError(
                f"{where}: {key} = {err.get('input')!r} is not valid", err["msg"].removeprefix("Value error, ")
            ) from None
        raise PatchlabError(
            f"{where}: {key} = {err.get('input')!r} is not valid ({err['msg'].lower()})",
            f"set {key} to what it takes: {err['msg'].removeprefix('Input should be ')}",
        ) from None


def from_dict(d: dict[str, Any], where: str) -> Experiment:
    """Validate the config (and the config with its `small` overrides applied), then build the Experiment."""
    if not isinstance(d, dict):
        raise PatchlabError(f"{where} is not a mapping of keys to values", "see experiments/*.yaml for the format")
    _check(d, where)
    small = d.get("small") or {}
    bad = sorted(set(small) - KEYS)
    if bad:
        raise PatchlabError(f"{where}: unknown key(s) {bad} in 'small'", f"allowed keys: {', '.join(sorted(KEYS))}")
    if small:
        _check({**d, **small, "small": {}}, f"{where} (small)")
    if d.get("variant"):
        from .variants import parse_variant

        parse_variant(d["variant"])
    return Experiment(**d)


class _StrictLoader(yaml.SafeLoader):
    """YAML as configs need it: a key given twice is refused (not last-wins), and so are aliases (`*name`: a
    348-byte alias bomb expands to gigabytes)."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise PatchlabError(
                f"line {mark.line + 1}: a YAML alias (*name); configs take no aliases", "write the value out in full"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise PatchlabError(f"line {key_node.start_mark.line + 1}: a key that is not a name", "use plain keys")
            if key in seen:
                raise PatchlabError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on line {seen[key]})",
                    "keep one of them: YAML would silently take the last",
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_config(path: str | Path) -> Experiment:
    """Read an experiment YAML file (duplicate keys and aliases refused)."""
    path = Path(path)
    if not path.is_file():
        raise PatchlabError(f"config {path} does not exist", "pass a file under experiments/")
    try:
        d = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader) or {}
    except PatchlabError as e:
        raise PatchlabError(f"{path}, {e.what}", e.fix) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PatchlabError(f"{path} is not valid YAML ({str(e)[:300]})", "fix the line it names") from None
    return from_dict(d, str(path))
