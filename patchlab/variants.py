"""Known-truth variants of a loaded model (patchlab-mini first of all), made by surgery on its real weights (no
training), so that what patchlab reports can be checked against an answer path known by construction
(docs/known_truth.md):

- `blocked:K`: from decoder layer K upward, no position after the audio (text, special markers, the final one)
  attends to the audio positions. Truth: patching the audio region at any layer >= K restores exactly nothing;
  knocking out audio -> final/text from K upward changes nothing; Delta_audio = 0 at layers >= K.
- `deaf`: every audio embedding the decoder receives is one fixed vector, whatever the clip (the connector's
  output weights zeroed, its bias set to the mean token embedding; patchlab-mini's language-ID token zeroed). Truth:
  the answer cannot depend on the clip: an audio-swapped run equals the clean one bit for bit (restoration is
  undefined and grounding refuses it), the lens cannot read the label above a constant guess, and with a text
  cue naming the label (corruption `text`) patching the audio region restores exactly nothing at every layer.
"""

from __future__ import annotations

import torch

from .errors import PatchlabError
from .hooks import additive
from .models.base import HookedLALM

VARIANTS = ("blocked", "deaf")


def parse_variant(spec: str) -> tuple[str, int | None]:
    """'blocked:16' -> ('blocked', 16); 'deaf' -> ('deaf', None); anything else is refused with the forms."""
    name, _, arg = spec.partition(":")
    if name == "deaf" and not arg:
        return name, None
    if name == "blocked" and arg.isdigit():
        return name, int(arg)
    raise PatchlabError(
        f"unknown model variant {spec!r}", "use 'blocked:K' (audio unreadable from decoder layer K up) or 'deaf'"
    )


def make_variant(lalm: HookedLALM, spec: str) -> HookedLALM:
    """Turn `lalm` (in place) into the known-truth variant `spec` and return it; its config records the variant."""
    name, layer = parse_variant(spec)
    if getattr(lalm.model.config, "patchlab_variant", None):
        raise PatchlabError(
            f"the model is already the variant {lalm.model.config.patchlab_variant!r}", "load it afresh first"
        )
    if name == "blocked":
        if not 0 < layer < lalm.n_layers:
            raise PatchlabError(
                f"blocked:{layer} is outside the decoder's layers 1..{lalm.n_layers - 1}",
                f"pick K in 1..{lalm.n_layers - 1} (at K = 0 the model never reads its audio)",
            )
        _block_audio(lalm, layer)
    else:
        _deafen(lalm)
    lalm.model.config.patchlab_variant = spec
    lalm.run_memo.clear()
    return lalm


def _block_audio(lalm: HookedLALM, from_layer: int) -> None:
    """The block rides in the decoder's attention mask: a 4-D additive mask built from the input ids, with the
    blocked entries at a value of their own (half the dtype's minimum: still exactly zero weight after softmax).
    Every path that runs layers with the captured mask (full, suffix and knockout forwards) carries it; below
    `from_layer` the attention modules clear exactly those entries (a knockout's own blocks, at the dtype's minimum,
    stay)."""
    audio_id = lalm.audio_token_id

    def build_mask(mod, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            raise PatchlabError(
                "the blocked variant needs input_ids to find the audio positions", "call the model with input_ids"
            )
        given = kwargs.get("attention_mask")
        if given is not None and not bool(given.all()):
            raise PatchlabError("the blocked variant does not take padded batches", "batch rows of equal length")
        n = ids.shape[1]
        is_audio = ids == audio_id
        after = is_audio.long().cummax(1).values.bool() & ~is_audio  # positions after the first audio position
        block = after[:, :, None] & is_audio[:, None, :]
        mask = additive(None, n, n, lalm.dtype, ids.device).expand(ids.shape[0], 1, n, n)
        return args, {**kwargs, "attention_mask": mask.masked_fill(block[:, None], _sentinel(lalm.dtype))}

    def unblock(mod, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None or not mask.is_floating_point():
            return None
        return args, {**kwargs, "attention_mask": mask.masked_fill(mask == _sentinel(mask.dtype), 0.0)}

    lalm.model.register_forward_pre_hook(build_mask, with_kwargs=True)
    for layer in lalm.layers[:from_layer]:
        lalm.adapter.block_part(layer, "attention").register_forward_pre_hook(unblock, with_kwargs=True)


def _sentinel(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min / 2


def _deafen(lalm: HookedLALM) -> None:
    """Zero the connector's output weights and set its bias to the mean input embedding (patchlab-mini's projector
    or patchlab-mini-qformer's connector); zero patchlab-mini's language-ID verbalizer."""
    inner = lalm.model.model
    out = lalm.adapter.connector_output(lalm.model)
    if out is None:
        raise PatchlabError(
            f"the deaf variant knows patchlab-mini's and patchlab-mini-qformer's connectors, not {lalm.family}'s",
            "use it on patchlab-mini or patchlab-mini-qformer",
        )
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(lalm.model.get_input_embeddings().weight.mean(0))
        language_id = getattr(inner, "language_id", None)
        if language_id is not None:
            language_id.verbalizer.weight.zero_()
