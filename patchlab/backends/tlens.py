"""TransformerLens TransformerBridge as a hook path: recording and per-cell patching through its hook points."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import PatchlabError
from ..hooks import decoder_input_embeds
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
            _BRIDGES[id(lalm.model)] = (
                TransformerBridge.boot_transformers(
                    lalm.source, hf_model=copy.deepcopy(lalm.model), tokenizer=lalm.tokenizer
                ),
                False,
            )
        except Exception as e:  # no adapter for the whole LALM: bridge its decoder, fed the decoder's input embeddings
            try:
                lm = decoder_as_causal_lm(lalm)
                _BRIDGES[id(lalm.model)] = (
                    TransformerBridge.boot_transformers(lm.config._name_or_path, hf_model=lm, tokenizer=lalm.tokenizer),
                    True,
                )
            except Exception as e2:
                raise PatchlabError(
                    f"TransformerLens' bridge cannot wrap {lalm.family} ({e.__class__.__name__}: {e}) nor its "
                    f"decoder ({e2.__class__.__name__}: {e2})",
                    "use backend='torch' or 'nnsight'",
                ) from e2
    return _BRIDGES[id(lalm.model)]


def decoder_as_causal_lm(lalm: HookedLALM) -> Any:
    """A copy of the LALM's decoder and head as the text model class transformers has for it (e.g. Llama)."""
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(lalm.adapter.text_config(lalm.model))
    cfg._attn_implementation = lalm.model.config._attn_implementation
    lm = AutoModelForCausalLM.from_config(cfg).to(lalm.dtype)
    lm.model.load_state_dict(lalm.decoder.state_dict())
    lm.lm_head.weight.data.copy_(lalm.lm_head.weight.data)
    return lm.eval()


def _input(lalm: HookedLALM, inputs: dict[str, torch.Tensor], embeds: bool):
    """What the bridge takes: the LALM's inputs, or (decoder-only bridge) the decoder's input embeddings."""
    return (decoder_input_embeds(lalm, inputs), {}) if embeds else _split(inputs)


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
    b, embeds = bridge(lalm)
    ids, rest = _input(lalm, inputs, embeds)
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
    b, embeds = bridge(lalm)
    ids, rest = _input(lalm, inputs, embeds)
    with torch.no_grad():
        return b.run_with_hooks(ids, fwd_hooks=[(_name(site, layer), lambda act, hook: edit(act))], **rest)
