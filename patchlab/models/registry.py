"""Family registry and `load`: find the adapter for a checkpoint and build its HookedLALM."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import PatchlabError
from ..mini import SMALL_MODELS, small_model
from .audioflamingo3 import AudioFlamingo3Adapter
from .base import Adapter, HookedLALM
from .desta2 import Desta2Adapter
from .generic import GenericAdapter
from .glm_asr import GlmAsrAdapter
from .granite_speech import GraniteSpeechAdapter
from .mini import MiniAdapter
from .mini_qformer import MiniQformerAdapter
from .music_flamingo import MusicFlamingoAdapter
from .qwen2_5_omni import Qwen25OmniAdapter
from .qwen2_audio import Qwen2AudioAdapter
from .qwen3_asr import Qwen3AsrAdapter
from .qwen3_omni_moe import Qwen3OmniMoeAdapter
from .qwen_audio import QwenAudioAdapter
from .tiny import tiny_tokenizer
from .voxtral import VoxtralAdapter

ADAPTERS: dict[str, Adapter] = {
    a.family: a
    for a in (
        Qwen2AudioAdapter(),
        VoxtralAdapter(),
        AudioFlamingo3Adapter(),
        Qwen25OmniAdapter(),
        GraniteSpeechAdapter(),
        GlmAsrAdapter(),
        MusicFlamingoAdapter(),
        Qwen3AsrAdapter(),
        Qwen3OmniMoeAdapter(),
        MiniAdapter(),
        MiniQformerAdapter(),
        QwenAudioAdapter(),
        Desta2Adapter(),
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


def adapter_for(model_type: str, architectures: list[str], where: str) -> Adapter:
    """The family's adapter; for a model_type patchlab has no file for, the generic adapter (when the checkpoint
    names its class), which says what it treated the model as."""
    try:
        return adapter_for_model_type(model_type, where)
    except PatchlabError:
        if not architectures:
            raise
    adapter = GenericAdapter(model_type, architectures[0])
    warnings.warn(
        f"{where}: model_type {model_type!r} has no patchlab adapter; loading it through the generic adapter as "
        f"{architectures[0]} (run `patchlab check {where}` to see whether that is right)",
        stacklevel=3,
    )
    return adapter


def load(
    path_or_id: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    device_map: Any = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    variant: str | None = None,
) -> HookedLALM:
    """Load a checkpoint (local directory, hub id, or "patchlab-mini") with its real processor, as a HookedLALM.

    `trust_remote_code=True` lets families whose code ships with the checkpoint (Qwen-Audio) or is the user's own
    package (DeSTA2) run it. `variant`: a known-truth variant made by surgery ('blocked:K', 'deaf'; see
    patchlab.variants)."""
    if str(path_or_id).replace("_", "-") in SMALL_MODELS:
        path_or_id = small_model(str(path_or_id).replace("_", "-"))[1]()  # parts converted, checkpoint built once
    if variant:
        from ..variants import parse_variant

        parse_variant(variant)  # a typo is refused before the model loads
    if str(path_or_id).startswith("~"):
        path_or_id = Path(path_or_id).expanduser()
    path = Path(path_or_id)
    cfg_file = path / "config.json"
    if path.exists() and not cfg_file.exists():
        raise PatchlabError(f"{path} has no config.json", "point --model at a transformers checkpoint directory")
    architectures: list[str] = []
    if cfg_file.exists():
        try:
            cfg = json.loads(cfg_file.read_text())
            model_type, architectures = cfg.get("model_type", ""), cfg.get("architectures") or []
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise PatchlabError(
                f"{cfg_file} is not a valid config ({e.__class__.__name__}: {e})",
                "restore config.json from the checkpoint's source (it must be a JSON object with model_type)",
            ) from None
    else:
        from transformers import AutoConfig

        try:
            auto = AutoConfig.from_pretrained(str(path_or_id), trust_remote_code=False)
            model_type, architectures = auto.model_type, list(getattr(auto, "architectures", None) or [])
        except OSError as e:
            raise PatchlabError(
                f"cannot find model {path_or_id!r} locally ({e.__class__.__name__})",
                "pass a local checkpoint directory; the hub is off here (HF_HUB_OFFLINE=1)",
            ) from e
    adapter = adapter_for(model_type, architectures, str(path_or_id))
    if isinstance(adapter, GenericAdapter):
        wants = wants_own_code(path) if path.is_dir() else []
        if wants and not trust_remote_code:
            raise PatchlabError(
                f"this checkpoint wants to run its own code: {path} maps classes to its own Python files (auto_map: "
                f"{', '.join(wants[:4])}), which would run as code when loaded; patchlab does not run it unasked",
                "if you trust that folder's code, pass trust_remote_code=True (patchlab.load) or --trust-remote-code "
                "for this model; otherwise use a checkpoint of a family transformers ships",
            )
        adapter.trust_remote_code = trust_remote_code
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    try:
        model = adapter.load_model(
            str(path_or_id),
            dtype=dtype,
            device_map=device_map,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except PatchlabError:
        raise
    except Exception as e:  # safetensors, json, torch and transformers each raise their own kind for a broken file
        raise PatchlabError(
            f"cannot load the {adapter.family} weights from {path_or_id} ({e.__class__.__name__}: {str(e)[:300]})",
            "the checkpoint's weight or config files are broken or incomplete: copy them again from their source",
        ) from None
    if device_map is None:
        model = model.to(device)
    check_weights(model, str(path_or_id))
    lalm = HookedLALM(model, adapter.processor(str(path_or_id), model), adapter, source=str(path_or_id))
    if variant:
        from ..variants import make_variant

        make_variant(lalm, variant)
    return lalm


def wants_own_code(path: Path) -> list[str]:
    """The classes a checkpoint folder maps to code of its own (`auto_map` in any of its JSON configs):
    what transformers would import from the folder and run with trust_remote_code."""
    found = []
    for f in sorted(path.glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        maps = [d.get("auto_map")] if isinstance(d, dict) else []
        if isinstance(d, dict):
            maps += [v.get("auto_map") for v in d.values() if isinstance(v, dict)]
        for m in maps:
            if isinstance(m, dict):
                found += [f"{f.name}: {k} -> {v}" for k, v in m.items()]
    return found


def check_weights(model: torch.nn.Module, where: str) -> None:
    """Refuse a model whose weights hold NaN/inf: every logit would be NaN and no answer could be read."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise PatchlabError(
                f"{where}: weight {name} holds {int((~torch.isfinite(p)).sum())} NaN/inf values",
                "the checkpoint is broken (a diverged training run or a bad conversion): use intact weights",
            )


def make_tiny(family: str, out_dir: str | Path, seed: int = 0, code_dir: str | Path | None = None) -> Path:
    """Write a tiny random-weight checkpoint + processor of `family` to `out_dir`, loadable offline (`code_dir`: the
    real code of families transformers does not ship)."""
    adapter = adapter_for_family(family)
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = tiny_tokenizer(adapter.special_tokens, adapter.extra_tokenizer_attrs, adapter.tiny_eos)
    try:
        if adapter.needs_remote_code:
            adapter.tiny(tok, str(out), code_dir=code_dir)
        else:
            adapter.tiny(tok, str(out))
    except BaseException:
        if created and not any(out.iterdir()):  # refused before writing anything: leave no empty folder behind
            out.rmdir()
        raise
    return out
