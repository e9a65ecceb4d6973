"""Family registry and `load`: find the adapter for a checkpoint and build its HookedLALM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import PatchlabError
from .audioflamingo3 import AudioFlamingo3Adapter
from .base import Adapter, HookedLALM
from .granite_speech import GraniteSpeechAdapter
from .mini import MiniAdapter
from .qwen2_5_omni import Qwen25OmniAdapter
from .qwen2_audio import Qwen2AudioAdapter
from .voxtral import VoxtralAdapter

ADAPTERS: dict[str, Adapter] = {
    a.family: a
    for a in (
        Qwen2AudioAdapter(),
        VoxtralAdapter(),
        AudioFlamingo3Adapter(),
        Qwen25OmniAdapter(),
        GraniteSpeechAdapter(),
        MiniAdapter(),
    )
}


def register(adapter: Adapter) -> Adapter:
    """Add a family (see docs/adapters.md)."""
    ADAPTERS[adapter.family] = adapter
    return adapter


def families() -> list[tuple[str, str]]:
    """(family, description) for every known family."""
    return [(a.family, a.description) for a in ADAPTERS.values()]


def adapter_for_family(family: str) -> Adapter:
    if family not in ADAPTERS:
        raise PatchlabError(f"unknown model family {family!r}", f"use one of: {', '.join(ADAPTERS)}")
    return ADAPTERS[family]


def adapter_for_model_type(model_type: str, where: str) -> Adapter:
    for a in ADAPTERS.values():
        if model_type in a.model_types:
            return a
    known = ", ".join(f"{t} ({a.family})" for a in ADAPTERS.values() for t in a.model_types)
    raise PatchlabError(
        f"{where}: model_type {model_type!r} is not a family patchlab knows",
        f"use a checkpoint of one of: {known}; or add an adapter (docs/adapters.md)",
    )


def load(
    path_or_id: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    device_map: Any = None,
    attn_implementation: str = "sdpa",
) -> HookedLALM:
    """Load a checkpoint (local directory, hub id, or "patchlab-mini") with its real processor, as a HookedLALM."""
    if str(path_or_id) == "patchlab-mini":
        from ..mini.build import build

        path_or_id = build()  # converts the parts and assembles the checkpoint on first use
    if str(path_or_id).startswith("~"):
        path_or_id = Path(path_or_id).expanduser()
    path = Path(path_or_id)
    cfg_file = path / "config.json"
    if path.exists() and not cfg_file.exists():
        raise PatchlabError(f"{path} has no config.json", "point --model at a transformers checkpoint directory")
    if cfg_file.exists():
        model_type = json.loads(cfg_file.read_text()).get("model_type", "")
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(str(path_or_id)).model_type
        except OSError as e:
            raise PatchlabError(
                f"cannot find model {path_or_id!r} locally ({e.__class__.__name__})",
                "pass a local checkpoint directory; the hub is off here (HF_HUB_OFFLINE=1)",
            ) from e
    adapter = adapter_for_model_type(model_type, str(path_or_id))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = adapter.model_class().from_pretrained(
        str(path_or_id), dtype=dtype, device_map=device_map, attn_implementation=attn_implementation
    )
    if device_map is None:
        model = model.to(device)
    return HookedLALM(model, adapter.load_processor(str(path_or_id)), adapter, source=str(path_or_id))
