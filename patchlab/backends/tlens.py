"""TransformerLens TransformerBridge as a hook path: recording and per-cell patching through its hook points."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import PatchlabError
from ..models.base import HookedLALM

TL_HOOK = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
}
_BRIDGES: dict[int, Any] = {}


def bridge(lalm: HookedLALM) -> Any:
    """Wrap a copy of the in-memory model in a TransformerBridge (cached per model).

    The bridge replaces the model's attention modules in place, so it gets its own copy: patchlab's
    model stays as transformers built it, and the two paths stay independent.
    """
    if id(lalm.model) not in _BRIDGES:
        try:
            from transformer_lens.model_bridge import TransformerBridge
        except ImportError as e:
            raise PatchlabError("transformer-lens is not installed", "pip install 'patchlab[peers]'") from e
        try:
            _BRIDGES[id(lalm.model)] = TransformerBridge.boot_transformers(
                lalm.source, hf_model=copy.deepcopy(lalm.model), tokenizer=lalm.tokenizer
            )
        except Exception as e:  # the bridge has no adapter for this architecture
            raise PatchlabError(
                f"TransformerLens' bridge cannot wrap {lalm.family} ({e.__class__.__name__}: {e})",
                "use backend='torch' or 'nnsight'; TransformerLens 4.3 supports Qwen2-Audio and AudioFlamingo3",
            ) from e
    return _BRIDGES[id(lalm.model)]


def _split(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    return inputs["input_ids"], rest


def _name(site: str, layer: int) -> str:
    if site not in TL_HOOK:
        raise PatchlabError(f"site {site!r} has no TransformerLens hook here", f"use one of {', '.join(TL_HOOK)}")
    return f"blocks.{layer}.{TL_HOOK[site]}"


def record_tl(
    lalm: HookedLALM,
    inputs: dict[str, torch.Tensor],
    sites: Sequence[str],
    layers: Sequence[int],
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[dict[tuple[str, int], torch.Tensor], torch.Tensor]:
    """Record through `run_with_cache` on the bridge's hook points."""
    b = bridge(lalm)
    ids, rest = _split(inputs)
    names = {_name(s, la): (s, la) for s in sites for la in layers}
    with torch.no_grad():
        logits, cache = b.run_with_cache(ids, names_filter=lambda n: n in names, **rest)
    return {key: keep(cache[name]) for name, key in names.items()}, logits


def run_with_patch(
    lalm: HookedLALM,
    inputs: dict[str, torch.Tensor],
    site: str,
    layer: int,
    edit: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One `run_with_hooks` forward with `edit` applied at (site, layer); returns logits."""
    b = bridge(lalm)
    ids, rest = _split(inputs)
    with torch.no_grad():
        return b.run_with_hooks(ids, fwd_hooks=[(_name(site, layer), lambda act, hook: edit(act))], **rest)
