"""Experiment configs (YAML under experiments/): what to run, on which model, data, tracks and seeds.

Every config is checked against a schema (pydantic) before any work: unknown keys are refused (a typo must
not silently fall back to a default), and each value must be of the kind its key takes. `small` holds the
overrides CI uses; the config with them applied is checked too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, Strict, ValidationError, create_model, field_validator

from .analyses import DEFAULT, REGISTRY
from .analyses.base import Int
from .data import load_track
from .errors import PatchlabError
from .variants import parse_variant
from .vocabulary import FORMATS, LABEL_SPACES

ANALYSES = tuple(a.name for a in REGISTRY)
DTYPES = ("float32", "float64", "bfloat16", "float16")
SECTIONS = {a.name: a.Options for a in REGISTRY if a.Options is not None}  # each analysis' section of the config


class _Experiment(BaseModel):
    """What to run, on which model, data, tracks and seeds (each analysis' section is added from the registry)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    model: str = Field("patchlab-mini", min_length=1)
    # several models on the same clips: each run under out/models/, then compared
    models: list[str] | None = Field(None, min_length=2)
    variant: str | None = None  # a known-truth variant of the model, made by surgery ('blocked:K', 'deaf')
    data: str = Field("../shared/sakura", min_length=1)
    tracks: list[str] = Field(default_factory=lambda: ["Gender"], min_length=1)
    # tracks that live in another SAKURA-format folder than `data` (e.g. Letter: experiments/data/phonetic)
    track_data: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    analyses: list[Literal[ANALYSES]] = Field(default_factory=lambda: list(DEFAULT), min_length=1)  # type: ignore[valid-type]
    formats: list[Literal[FORMATS]] = Field(default_factory=lambda: ["mc"], min_length=1)  # type: ignore[valid-type]
    # logit-lens formats above; the prompt format of patching, grounding, enrichment and cue runs here
    prompt: Literal[FORMATS] = "mc"  # type: ignore[valid-type]
    limit: Int | None = Field(None, ge=1)  # N clips per track: a stratified random sample (seed)
    part: list[Int] | None = Field(None, min_length=2, max_length=2)  # [i, k]: the i-th of k seeded parts
    seed: Int = Field(0, ge=0)
    shard_size: Int = Field(8, ge=1)
    device: str = "cpu"
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    device_map: str | None = None  # e.g. "auto": transformers spreads a large model over the GPUs it sees
    # let the checkpoint's own code run (Qwen-Audio, DeSTA2): consent for this config's model(s) only
    trust_remote_code: Annotated[bool, Strict()] = False
    # how labels are tokenized: auto, none (AudioLens: no leading space), space
    label_space: Literal[LABEL_SPACES] = "auto"  # type: ignore[valid-type]
    small: dict = Field(default_factory=dict)  # overrides for the CI size
    description: str = ""
    _given: dict = PrivateAttr(default_factory=dict)  # the analysis sections as written (the run's identity)

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

    @field_validator("track_data")
    @classmethod
    def _track_data_names(cls, track_data: dict[str, str], info) -> dict[str, str]:
        """Every track named in `track_data` is one the experiment runs (a typo would silently read `data`)."""
        unknown = sorted(set(track_data) - set(info.data.get("tracks") or []))
        if unknown:
            raise ValueError(f"track_data names {unknown}, which tracks does not list: name the experiment's tracks")
        return track_data

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

    def config(self) -> dict[str, Any]:
        """The config as a plain mapping: every top-level key with its value, each analysis section as written
        (what run.json records and the digest hashes)."""
        top = {k: getattr(self, k) for k in _Experiment.model_fields}
        return {**top, **{k: dict(self._given.get(k, {})) for k in SECTIONS}}

    def replace(self, **changes: Any) -> Experiment:
        """This config with some keys changed (validated again)."""
        return from_dict({**self.config(), **changes}, self.name)

    def sized(self, small: bool) -> Experiment:
        """The config at CI size (its `small` overrides applied) or as written."""
        if not small:
            return self
        return from_dict({**self.config(), **self.small, "small": {}}, f"{self.name} (small)")

    def root(self, track: str) -> str:
        """The dataset folder `track` is read from (`track_data`'s, else `data`)."""
        return self.track_data.get(track, self.data)

    def samples(self, track: str) -> list:
        """The clips of `track` this experiment runs on (its limit, seed and part applied)."""
        return load_track(self.root(track), track, self.limit, self.seed, tuple(self.part) if self.part else None)

    def digest(self) -> str:
        """Hash of everything in the config that decides the rows (sharding included; not the device)."""
        d = self.config()
        for k in ("device", "device_map", "description", "small"):
            d.pop(k)
        if d["part"] is None:  # the whole data: the digest of every config written before parts existed
            d.pop("part")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


Experiment = create_model(
    "Experiment",
    __base__=_Experiment,
    __doc__=_Experiment.__doc__,
    **{k: (options, Field(default_factory=options)) for k, options in SECTIONS.items()},
)
KEYS = set(Experiment.model_fields)


def _refusal(e: ValidationError, where: str) -> PatchlabError:
    """The schema's first complaint as a refusal naming the key, the value given and what the key takes."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        loc = [str(p) for p in err["loc"]]
        section = loc[0] if len(loc) > 1 and loc[0] in SECTIONS else ""
        allowed = sorted(SECTIONS[section].model_fields if section else KEYS)
        inside = f" in '{section}'" if section else ""
        fix = f"allowed keys{inside}: {', '.join(allowed)}"
        return PatchlabError(f"{where}: unknown key(s) {[loc[-1]]}{inside}", fix)
    if err["type"] == "missing":
        return PatchlabError(f"{where}: no {key!r}", f"give the experiment a {key}")
    if err["type"] == "value_error":  # a rule across keys of a section: its message says what to give
        return PatchlabError(
            f"{where}: {key} = {err.get('input')!r} is not valid", err["msg"].removeprefix("Value error, ")
        )
    return PatchlabError(
        f"{where}: {key} = {err.get('input')!r} is not valid ({err['msg'].lower()})",
        f"set {key} to what it takes: {err['msg'].removeprefix('Input should be ')}",
    )


def _validated(d: dict[str, Any], where: str) -> Experiment:
    try:
        exp = Experiment.model_validate(d)
    except ValidationError as e:
        raise _refusal(e, where) from None
    exp._given = {k: d[k] for k in SECTIONS if k in d}
    return exp


def from_dict(d: dict[str, Any], where: str) -> Experiment:
    """Validate the config (and the config with its `small` overrides applied), then build the Experiment."""
    if not isinstance(d, dict):
        raise PatchlabError(f"{where} is not a mapping of keys to values", "see experiments/*.yaml for the format")
    exp = _validated(d, where)
    small = d.get("small") or {}
    bad = sorted(set(small) - KEYS)
    if bad:
        raise PatchlabError(f"{where}: unknown key(s) {bad} in 'small'", f"allowed keys: {', '.join(sorted(KEYS))}")
    if small:
        _validated({**d, **small, "small": {}}, f"{where} (small)")
    if d.get("variant"):
        parse_variant(d["variant"])
    return exp


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
