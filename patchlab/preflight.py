"""Checks of a job's inputs before any model loads and before anything is written: every clip's audio header, the
device, and each configured layer against the model's depth read from its config (not from the loaded model)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf
import torch

from .data import Sample
from .errors import PatchlabError
from .mini import SMALL_MODELS

SMALL_DEPTH = 30  # SmolLM2-135M, the decoder of both of patchlab's small models


def check_audio(samples: Iterable[Sample]) -> None:
    """Refuse the job if any clip's file is missing or not audio libsndfile can open (its header is read, not its
    samples), naming every such clip at once."""
    bad = []
    for s in samples:
        if not s.path.is_file():
            bad.append(f"{s.track}/{s.id}: no such file")
            continue
        try:
            info = sf.info(str(s.path))
            if info.frames == 0:
                bad.append(f"{s.track}/{s.id}: 0 samples")
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            bad.append(f"{s.track}/{s.id}: {str(e).splitlines()[0][:120]}")
    if bad:
        raise PatchlabError(
            f"{len(bad)} clip(s) cannot be read as audio: {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}",
            "re-encode them as WAV or FLAC, or remove their rows from metadata.csv",
        )


def check_device(device: str) -> None:
    """Refuse a device torch does not know or this machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PatchlabError(f"device {device!r} is not a torch device ({e})", "use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise PatchlabError(f"device {device!r} is not available here", "use cpu, or a GPU this machine has")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise PatchlabError(f"device {device!r} is not one patchlab runs on", "use cpu or cuda")


def decoder_depth(model: str) -> int | None:
    """The decoder's layer count from the checkpoint's config.json (None where it cannot be told without loading)."""
    if model.replace("_", "-") in SMALL_MODELS:
        return SMALL_DEPTH
    cfg_file = Path(model).expanduser() / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(cfg, dict):
        return None
    for path in (("text_config",), ("llm_config",), ("thinker_config", "text_config"), ()):
        node = cfg
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("num_hidden_layers"), int):
            return node["num_hidden_layers"]
    return None


def check_layers(model: str, layers: dict[str, list[int] | None]) -> None:
    """Refuse layer lists (`{"patch.layers": [...]}`) that name layers the model's decoder does not have."""
    depth = decoder_depth(model)
    if depth is None:
        return
    for key, chosen in layers.items():
        bad = [la for la in chosen or () if not 0 <= la < depth]
        if bad:
            raise PatchlabError(
                f"{key} {bad} are outside 0..{depth - 1} ({model} has {depth} decoder layers)",
                f"list layers between 0 and {depth - 1}",
            )
