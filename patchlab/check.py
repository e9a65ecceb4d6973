"""`patchlab check MODEL`: the invariants the test suite holds every shipped family to, run on any loadable model.

Each check measures a number and compares it with a tolerance; a failed check names what to look at in the
adapter (docs/adapters.md). A new family passes when every row says `pass`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .corrupt import Pair, audio_embedding_noise, decoder_inputs
from .data import tone
from .errors import PatchlabError
from .hooks import hooked
from .models.base import Batch, HookedLALM, Prompt
from .patching import PatchSpec, patch, region_specs
from .patching.knockout import KnockoutSpec, knockout_logits
from .patching.reference import knockout_by_hand, per_cell_sweep
from .record import record
from .vocabulary import RECORD_SITES

PROMPT = Prompt("What is the speaker's gender?")


@dataclass
class Check:
    name: str
    passed: bool
    measured: str
    tolerance: str
    fix: str


def _clip(lalm: HookedLALM, seconds: float, freq: float = 220.0, seed: int = 0) -> Batch:
    """A synthetic clip through the family's real processor, or its random-feature inputs where that cannot run."""
    try:
        return lalm.prepare(tone(seconds, freq, lalm.sampling_rate, seed), lalm.sampling_rate, PROMPT, id=f"{seconds}s")
    except PatchlabError:
        batch = lalm.adapter.feature_batch(lalm, seconds, PROMPT, seed)
        if batch is None:
            raise
        return batch


def _lengths(lalm: HookedLALM) -> tuple[float, float]:
    """Two clip lengths that give two audio-region lengths (a chunking encoder needs a second window)."""
    window = lalm.adapter.max_seconds
    return (1.0, 2.3) if window is not None else (1.0, 31.0)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def check_forward(lalm: HookedLALM, batches: list[Batch], tol: float) -> Check:
    worst = 0.0
    for batch in batches:
        inputs = batch.to(lalm.device, lalm.dtype).tensors
        with torch.no_grad():
            plain = lalm.model(**inputs, use_cache=False).logits
            reads = {(s, la): (lambda x: None) for s in RECORD_SITES for la in range(lalm.n_layers)}
            with hooked(lalm, reads=reads):
                hooked_logits = lalm.forward(batch)
        worst = max(worst, _max_diff(plain, hooked_logits))
    return Check(
        "hooked forward = plain forward",
        worst <= tol,
        f"max |Δlogit| {worst:.2e}",
        f"<= {tol:g}",
        "a hook returns a changed tensor: check the adapter's decoder()/layers and that reads return None",
    )


def check_regions(lalm: HookedLALM, batches: list[Batch]) -> Check:
    problems, sizes = [], []
    for batch in batches:
        embeds = decoder_inputs(lalm, batch)[0]
        ids = batch.to(lalm.device).tensors["input_ids"][0]
        emb = lalm.model.get_input_embeddings()
        inside = ids < emb.num_embeddings  # a placeholder id beyond the table can only be read once overwritten
        table = emb(ids.clamp(max=emb.num_embeddings - 1)).to(embeds.dtype)
        scattered = ((embeds != table).any(-1) | ~inside).nonzero().flatten().tolist()
        r = batch.regions[0]
        sizes.append(len(r.audio))
        if scattered != list(r.audio):
            problems.append(f"{batch.meta[0]['id']}: audio region {_span(r.audio)} vs written {_span(scattered)}")
    fixed = lalm.adapter.audio_queries
    if fixed is None and len(set(sizes)) != 2:
        problems.append(f"two clip lengths gave audio regions of sizes {sizes}")
    if fixed is not None and set(sizes) != {fixed}:
        problems.append(f"a connector of {fixed} queries gave audio regions of sizes {sizes}")
    return Check(
        "audio region = positions the model writes audio into",
        not problems,
        "; ".join(problems) or f"{sizes[0]} and {sizes[1]} positions, exact",
        "exact, 2 lengths",
        "the adapter's audio_token_id() or the processor's placeholder expansion (chat_text())",
    )


def _span(pos) -> str:
    pos = list(pos)
    return f"[{pos[0]}..{pos[-1]}] ({len(pos)})" if pos else "[] (0)"


def check_lens(lalm: HookedLALM, batch: Batch, tol: float) -> Check:
    from .lens import lens_logits

    diff = _max_diff(lens_logits(lalm, batch)[-1], lalm.forward(batch))
    return Check(
        "lens at the last layer = the model's logits",
        diff <= tol,
        f"max |Δlogit| {diff:.2e}",
        f"<= {tol:g}",
        "final norm or head: the adapter's decoder().norm, lm_head() and logits_scale()",
    )


def _pair(lalm: HookedLALM, clean: Batch, kind: str) -> Pair:
    if kind == "noise":
        noise = audio_embedding_noise(lalm, clean, 3.0, np.random.default_rng(0))
        return Pair(clean, clean, 0, "check", {"kind": "noise"}, noise)
    n = len(clean.tensors["input_ids"][0])
    corrupt = _clip(lalm, _lengths(lalm)[0], freq=110.0, seed=1)
    if len(corrupt.tensors["input_ids"][0]) != n:
        raise AssertionError("two clips of one length gave different token counts")
    return Pair(clean, corrupt, 0, "check", {"kind": "swap"})


def _labels(lalm: HookedLALM, clean: Batch) -> tuple[int, int]:
    """Two vocabulary ids the clean run ranks first and second: a label pair with a real logit difference."""
    top = lalm.forward(clean)[0, -1].float().topk(2).indices
    return int(top[0]), int(top[1])


def check_batched(lalm: HookedLALM, pair: Pair, labels, tol: float) -> Check:
    layers = sorted({0, 1, lalm.n_layers // 2, lalm.n_layers - 1})  # first, second, middle, last
    specs = [
        PatchSpec(la, site, pos) for la in layers for site in ("resid_pre", "attn_out", "mlp_out")
        for pos in ("audio", "text", "final")
    ]  # fmt: skip
    fast = patch(lalm, [pair], specs, labels, max_batch=32, progress=False).table
    slow = patch(lalm, [pair], specs, labels, max_batch=1, skip_layers=False, progress=False).table
    keys = ["layer", "site", "position"]
    a, b = (t.sort_values(keys)["logit_diff"].to_numpy() for t in (fast, slow))
    diff = float(np.abs(a - b).max())
    return Check(
        "batched layer-skipping patching = one full forward per patch",
        diff <= tol,
        f"max |Δ logit diff| {diff:.2e} over {len(specs)} patches",
        f"<= {tol:g}",
        "layer inputs: the adapter's layer kwargs (rotary/position embeddings, masks) for a resumed forward",
    )


def check_restores(lalm: HookedLALM, pair: Pair, labels, tol: float) -> Check:
    t = patch(lalm, [pair], region_specs(lalm.n_layers, ("all",), "resid_pre"), labels, progress=False).table
    diff = float(np.abs(t["logit_diff"] - t["clean_logit_diff"]).max())
    return Check(
        "patching all positions restores the clean run",
        diff <= tol,
        f"max |Δ logit diff| {diff:.2e}",
        f"<= {tol:g}",
        "the resid_pre hook must see (and replace) the whole residual stream of the layer",
    )


def check_text_layer0(lalm: HookedLALM, pair: Pair, labels, tol: float) -> Check:
    t = patch(lalm, [pair], [PatchSpec(0, "resid_pre", "text")], labels, progress=False).table
    diff = float(np.abs(t["logit_diff"] - t["corrupt_logit_diff"]).max())
    return Check(
        "text at layer 0 under an audio-only corruption changes nothing",
        diff <= tol,
        f"|Δ logit diff| {diff:.2e}",
        f"<= {tol:g}",
        "the text region holds an audio position, or the corruption touched text: regions / audio_token_id",
    )


def check_sweep(lalm: HookedLALM, pair: Pair, labels, tol: float) -> Check:
    from .patching import sweep

    layers = sorted({0, lalm.n_layers // 2, lalm.n_layers - 1})
    positions = sorted({0, *pair.clean.regions[0].audio[:2], pair.clean.length - 1})
    specs = [s for s in sweep(lalm.n_layers, pair.clean.length, layers=layers) if s.positions[0] in positions]
    ours = patch(lalm, [pair], specs, labels, progress=False).table
    cells = [(int(r.layer), int(r.position)) for r in ours.itertuples()]  # the engine's order (high layers first)
    ref = per_cell_sweep(lalm, pair, "resid_pre", backend="torch", cells=cells)
    ids = list(labels)
    theirs = (ref[:, ids[0]] - ref[:, ids[1]]).numpy()
    diff = float(np.abs(ours["logit_diff"].to_numpy() - theirs).max())
    return Check(
        "a resid_pre sweep = an independent per-cell loop",
        diff <= tol,
        f"max |Δ logit diff| {diff:.2e} over {len(specs)} cells",
        f"<= {tol:g}",
        "the resid_pre hook point: the adapter's layers must be the decoder blocks in execution order",
    )


def check_heads(lalm: HookedLALM, batch: Batch, tol: float) -> Check:
    """Single-head knockouts (final -> audio, batched and resumed at their layer) against a full forward with that
    head's attention mask written out by hand; and every head blocked one by one = the whole layer blocked."""
    layers = sorted({0, lalm.n_layers - 1})
    specs = [KnockoutSpec(la, la + 1, "final", "audio", (h,)) for la in layers for h in sorted({0, lalm.n_heads - 1})]
    hand = torch.stack([knockout_by_hand(lalm, batch, s) for s in specs])
    diff = _max_diff(knockout_logits(lalm, batch, specs), hand)
    every = [KnockoutSpec(0, None, "final", "audio", tuple(range(lalm.n_heads))), KnockoutSpec(0, None)]
    both = knockout_logits(lalm, batch, every)
    whole = _max_diff(both[0], both[1])
    return Check(
        "head knockout = the hand-edited mask",
        max(diff, whole) <= tol,
        f"max |Δ logit| {diff:.2e} over {len(specs)} heads; all heads vs the layer {whole:.2e}",
        f"<= {tol:g}",
        "the attention must take a per-head additive mask (batch, heads, query, key) in sdpa or eager",
    )


def check_finite(lalm: HookedLALM, batch: Batch) -> Check:
    from .errors import PatchlabError

    try:
        record(lalm, batch, RECORD_SITES)
        ok, measured = True, "all sites, all layers finite"
    except PatchlabError as e:
        ok, measured = False, e.what
    return Check("activations finite", ok, measured, "no NaN/inf", "the weights or the dtype (float16 overflows)")


def run_checks(lalm: HookedLALM, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Every check, in order; each failure is a row, not an exception (so the table shows them all)."""
    tol = 1e-4 if lalm.dtype in (torch.float32, torch.float64) else 5e-2
    a, b = _lengths(lalm)
    batches = [_clip(lalm, a), _clip(lalm, b)]
    clean = batches[0]
    labels = _labels(lalm, clean)
    swap = functools.cache(lambda: _pair(lalm, clean, "swap"))  # built once, on first use (a failure is a row)
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("forward", lambda: check_forward(lalm, batches, tol)),
        ("regions", lambda: check_regions(lalm, batches)),
        ("lens", lambda: check_lens(lalm, clean, tol)),
        ("batched", lambda: check_batched(lalm, swap(), labels, tol)),
        ("restores", lambda: check_restores(lalm, swap(), labels, tol)),
        ("text@0", lambda: check_text_layer0(lalm, _pair(lalm, clean, "noise"), labels, tol)),
        ("sweep", lambda: check_sweep(lalm, swap(), labels, tol)),
        ("heads", lambda: check_heads(lalm, clean, tol)),
        ("finite", lambda: check_finite(lalm, clean)),
    ]
    out = []
    for name, step in steps:
        if progress:
            progress(name)
        try:
            out.append(step())
        except Exception as e:  # a crash is a failed check with its message, not a traceback that hides the rest
            out.append(Check(name, False, f"{e.__class__.__name__}: {str(e)[:200]}", "runs", "see the message"))
    return out


def table(checks: list[Check]) -> str:
    """The pass/fail table `patchlab check` prints."""
    w = max(len(c.name) for c in checks)
    lines = [f"{'check':{w}s}  result  measured (tolerance)"]
    for c in checks:
        lines.append(f"{c.name:{w}s}  {'pass' if c.passed else 'FAIL'}    {c.measured} ({c.tolerance})")
        if not c.passed:
            lines.append(f"{'':{w}s}          look at: {c.fix}")
    return "\n".join(lines)
