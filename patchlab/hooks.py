"""Read and write activations at named sites of decoder layers with plain torch hooks.

Sites (per layer): resid_pre (layer input), resid_mid (after attention is added), resid_post (layer
output), attn_out (attention module output), mlp_out (MLP output), head_out (per-head attention
output before o_proj, shape heads x d_head). Recording and patching share these hook points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .errors import PatchlabError
from .models.base import HookedLALM
from .vocabulary import SITES

Edit = Callable[[torch.Tensor], torch.Tensor]  # activation (batch, pos, ...) -> new activation
Read = Callable[[torch.Tensor], None]


def check_site(site: str) -> str:
    if site not in SITES:
        raise PatchlabError(f"unknown site {site!r}", f"use one of {', '.join(SITES)}")
    return site


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out: Any, new: torch.Tensor) -> Any:
    return (new, *out[1:]) if isinstance(out, tuple) else new


@contextmanager
def hooked(
    lalm: HookedLALM,
    reads: dict[tuple[str, int], Read] | None = None,
    edits: dict[tuple[str, int], Edit] | None = None,
) -> Iterator[None]:
    """Within the block, call `reads[(site, layer)]` with each activation and apply `edits[(site, layer)]`.

    Edits run before reads at the same site, so a read sees the patched activation.
    """
    reads, edits = reads or {}, edits or {}
    handles = []
    keys = set(reads) | set(edits)
    for site, layer in keys:
        check_site(site)
        if not 0 <= layer < lalm.n_layers:
            raise PatchlabError(f"layer {layer} is out of range", f"use 0..{lalm.n_layers - 1}")
    m = lalm.residual_multiplier

    def make(site: str, layer: int):
        edit, read = edits.get((site, layer)), reads.get((site, layer))

        def apply(x: torch.Tensor) -> torch.Tensor:
            if edit is not None:
                x = edit(x)
            if read is not None:
                read(x)
            return x

        return apply

    for site, layer in keys:
        block = lalm.layers[layer]
        attn = lalm.adapter.block_part(block, "attention")
        apply = make(site, layer)
        if site == "resid_pre":

            def pre(mod, args, kwargs, apply=apply):
                return _with_hidden(args, kwargs, apply(_hidden(args, kwargs)))

            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        elif site == "resid_post":
            handles.append(
                block.register_forward_hook(lambda mod, a, out, apply=apply: _replace_first(out, apply(_first(out))))
            )
        elif site in ("attn_out", "mlp_out"):
            mod = attn if site == "attn_out" else lalm.adapter.block_part(block, "mlp")
            handles.append(
                mod.register_forward_hook(lambda mod, a, out, apply=apply: _replace_first(out, apply(_first(out))))
            )
        elif site == "head_out":

            def heads(mod, args, apply=apply):
                x = args[0]
                b, t, _ = x.shape
                return (apply(x.view(b, t, lalm.n_heads, lalm.d_head)).reshape(b, t, -1), *args[1:])

            handles.append(lalm.adapter.o_proj(attn).register_forward_pre_hook(heads))
        elif site == "resid_mid":
            if (site, layer) not in edits:
                handles.append(
                    lalm.adapter.block_part(block, "mlp_norm").register_forward_pre_hook(
                        lambda mod, args, apply=apply: (apply(args[0]), *args[1:])
                    )
                )
                continue
            # Writing the residual after attention: resid_mid = resid_pre + m * attn_out, so we edit attn_out
            # such that the sum becomes the patched value (m is the family's residual multiplier).
            state: dict[str, torch.Tensor] = {}

            def keep_pre(mod, args, kwargs, state=state):
                state["pre"] = _hidden(args, kwargs)

            def fix_attn(mod, a, out, apply=apply, state=state):
                attn_o = _first(out)
                mid = state["pre"] + m * attn_o
                return _replace_first(out, attn_o + (apply(mid) - mid) / m)

            handles.append(block.register_forward_pre_hook(keep_pre, with_kwargs=True))
            handles.append(attn.register_forward_hook(fix_attn))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def layer_inputs(lalm: HookedLALM, out: dict[str, Any]) -> Iterator[None]:
    """Capture the keyword arguments the model passes to its decoder layers (mask, rotary embeddings, ...).

    With them, `run_from_layer` can resume a forward at any layer from a cached residual stream. The run's own
    key/value cache is not kept: a resumed forward is given its own (`PrefixKV`) or none.
    """
    own = ("hidden_states", "cache", "past_key_values", "use_cache")

    def grab(mod, args, kwargs):
        out["kwargs"] = {k: v for k, v in kwargs.items() if k not in own}

    handle = lalm.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def decoder_input_embeds(lalm: HookedLALM, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The embeddings the decoder receives for model inputs `tensors` (audio embeddings already scattered in)."""
    got: dict[str, torch.Tensor] = {}

    def grab(mod, args, kwargs):
        got["x"] = kwargs["inputs_embeds"].detach()

    handle = lalm.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            lalm.model(**tensors, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return got["x"]


class PrefixKV:
    """Keys and values of positions [0, p0) from a recorded run, served to attention as its cache.

    Positions before the first patched one cannot change (attention is causal), so a patched forward
    computes only positions p0.. and attends to these cached prefix keys/values (one recorded row, served to
    however many rows the forward holds at that layer).
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], p0: int) -> None:
        self.k = [k[..., :p0, :] for k in keys]
        self.v = [v[..., :p0, :] for v in values]

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        b = key.shape[0]
        k, v = self.k[layer_idx].expand(b, -1, -1, -1), self.v[layer_idx].expand(b, -1, -1, -1)
        return torch.cat([k, key], dim=-2), torch.cat([v, value], dim=-2)


def suffix_kwargs(layer_kwargs: dict[str, Any], p0: int, length: int, dtype: torch.dtype) -> dict[str, Any]:
    """Decoder-layer arguments for positions p0..length-1 only (rotary tables, positions, causal mask)."""
    kw = dict(layer_kwargs)
    if "position_embeddings" in kw and kw["position_embeddings"] is not None:
        kw["position_embeddings"] = tuple(t[..., p0:, :] for t in kw["position_embeddings"])
    for name in ("position_ids", "cache_position"):
        if isinstance(kw.get(name), torch.Tensor):
            kw[name] = kw[name][..., p0:]
    mask = kw.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        kw["attention_mask"] = mask[:, :, p0:, :]
    else:  # SDPA's implicit causal mask does not hold for a suffix: make it explicit
        full = torch.full((length - p0, length), torch.finfo(dtype).min, dtype=dtype)
        kw["attention_mask"] = torch.triu(full, diagonal=p0 + 1)[None, None]
    return kw


def run_from_layer(
    lalm: HookedLALM, resid: torch.Tensor, start: int, layer_kwargs: dict[str, Any], prefix: PrefixKV | None = None
) -> torch.Tensor:
    """Resume the decoder at layer `start` from residual `resid` (batch, pos, d); returns the last layer's output.

    Hooks registered with `hooked` fire as in a full forward; layers below `start` are skipped. With
    `prefix`, `resid` holds only the positions after the prefix, which attention reads from the cache.
    """
    h = resid
    kwargs = layer_kwargs if prefix is None else {**layer_kwargs, "cache": prefix}
    for layer in lalm.layers[start:]:
        h = _first(layer(h, **kwargs))
    return h


def additive(mask: torch.Tensor | None, q_len: int, k_len: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The decoder's attention mask as an additive float mask (1 or batch, 1, q_len, k_len); None means causal."""
    lo = torch.finfo(dtype).min
    if mask is None:
        full = torch.full((q_len, k_len), lo, dtype=dtype, device=device)
        return torch.triu(full, diagonal=k_len - q_len + 1)[None, None]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask.to(device), lo)
    return mask.to(dtype)
