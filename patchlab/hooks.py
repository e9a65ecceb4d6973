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

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out")
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
        attn = block.self_attn
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
            mod = attn if site == "attn_out" else block.mlp
            handles.append(
                mod.register_forward_hook(lambda mod, a, out, apply=apply: _replace_first(out, apply(_first(out))))
            )
        elif site == "head_out":

            def heads(mod, args, apply=apply):
                x = args[0]
                b, t, _ = x.shape
                return (apply(x.view(b, t, lalm.n_heads, lalm.d_head)).reshape(b, t, -1), *args[1:])

            handles.append(attn.o_proj.register_forward_pre_hook(heads))
        elif site == "resid_mid":
            if (site, layer) not in edits:
                handles.append(
                    block.post_attention_layernorm.register_forward_pre_hook(
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

    With them, `run_from_layer` can resume a forward at any layer from a cached residual stream.
    """

    def grab(mod, args, kwargs):
        out["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    handle = lalm.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def run_from_layer(lalm: HookedLALM, resid: torch.Tensor, start: int, layer_kwargs: dict[str, Any]) -> torch.Tensor:
    """Resume the decoder at layer `start` from residual `resid` (batch, pos, d); returns the last layer's output.

    Hooks registered with `hooked` fire as in a full forward; layers below `start` are skipped.
    """
    h = resid
    for layer in lalm.layers[start:]:
        h = _first(layer(h, **layer_kwargs))
    return h
