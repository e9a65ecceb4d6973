"""nnsight as a hook path: recording and per-cell patching through `NNsight(model).trace`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import PatchlabError
from ..models.base import HookedLALM

_WRAPPED: dict[int, Any] = {}
# execution order inside a decoder layer (nnsight reads modules in the order they run)
_ORDER = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


def wrapped(lalm: HookedLALM) -> Any:
    """nnsight's wrapper around a copy of the model (so nothing nnsight does can touch patchlab's)."""
    if id(lalm.model) not in _WRAPPED:
        try:
            from nnsight import NNsight
        except ImportError as e:
            raise PatchlabError("nnsight is not installed", "pip install 'patchlab[peers]'") from e
        _WRAPPED[id(lalm.model)] = NNsight(copy.deepcopy(lalm.model))
    return _WRAPPED[id(lalm.model)]


def _layers(nn_model: Any, lalm: HookedLALM) -> Any:
    envoy = nn_model
    for part in _decoder_path(lalm):
        envoy = getattr(envoy, part)
    return envoy.layers


def _decoder_path(lalm: HookedLALM) -> list[str]:
    for name, mod in lalm.model.named_modules():
        if mod is lalm.decoder:
            return name.split(".")
    raise PatchlabError("decoder module not found inside the model", "check the family adapter's decoder()")


def _envoy(lalm: HookedLALM, layer: Any, site: str) -> Any:
    part = lalm.adapter.block_part
    return {
        "resid_pre": lambda: layer.input,
        "attn_out": lambda: part(layer, "attention").output[0],
        "resid_mid": lambda: part(layer, "mlp_norm").input,
        "mlp_out": lambda: part(layer, "mlp").output,
        "resid_post": lambda: layer.output,
    }[site]()


def record_nnsight(
    lalm: HookedLALM,
    inputs: dict[str, torch.Tensor],
    sites: Sequence[str],
    layers: Sequence[int],
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[dict[tuple[str, int], torch.Tensor], torch.Tensor]:
    """Record by saving module inputs/outputs inside one trace, layer by layer in execution order."""
    import nnsight

    model = wrapped(lalm)
    saved: dict[tuple[str, int], Any] = {}
    with torch.no_grad(), model.trace(**inputs, use_cache=False):
        blocks = _layers(model, lalm)
        for la in sorted(layers):
            for site in _ORDER:
                if site in sites:
                    saved[(site, la)] = nnsight.save(_envoy(lalm, blocks[la], site))
        logits = nnsight.save(model.output.logits)
    return {k: keep(v) for k, v in saved.items()}, logits


def run_with_patch(
    lalm: HookedLALM,
    inputs: dict[str, torch.Tensor],
    site: str,
    layer: int,
    edit: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One trace with `edit` applied at (site, layer); returns logits."""
    import nnsight

    model = wrapped(lalm)
    with torch.no_grad(), model.trace(**inputs, use_cache=False):
        layer_envoy = _layers(model, lalm)[layer]
        if site == "resid_pre":
            layer_envoy.input = edit(layer_envoy.input)
        elif site == "resid_post":
            layer_envoy.output = edit(layer_envoy.output)
        elif site == "mlp_out":
            mlp = lalm.adapter.block_part(layer_envoy, "mlp")
            mlp.output = edit(mlp.output)
        elif site == "attn_out":
            attn = lalm.adapter.block_part(layer_envoy, "attention")
            attn.output[0][:] = edit(attn.output[0])
        else:
            raise PatchlabError(f"site {site!r} is not wired for nnsight patching", "use resid_pre/resid_post/mlp_out")
        logits = nnsight.save(model.output.logits)
    return logits
