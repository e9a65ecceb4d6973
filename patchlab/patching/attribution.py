"""Attribution patching (AtP): every (layer, position) cell's patching effect from two forwards and one backward.

Denoising estimate for a cell: (a_clean - a_corrupt) . d metric / d a, the gradient taken on the corrupted run.
It is a first-order estimate; for resid_pre, AtP*'s query/key fix (`qk_fix`) makes the layer's own attention
pattern change exact. `verify_top` re-runs the K largest cells with real patching.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import pandas as pd
import torch

from ..corrupt import Pair
from ..errors import PatchlabError
from ..hooks import hooked
from ..metrics import final_metrics, wide
from ..models.base import Batch, HookedLALM
from ..record import clean_run, record
from .engine import embed_noise, patch
from .knockout import KnockoutSpec, knockout_logits
from .qk_fix import capture_attention, qk_correction
from .spec import PatchSpec

ATP_SITES = ("resid_pre", "attn_out", "mlp_out")


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter requires a gradient within the block: a backward computes the activations' gradients only (AtP
    needs no weight gradients), and the audio encoder, upstream of the leaf, builds no graph (its memo serves)."""
    was = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in was:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in was:
            p.requires_grad_(r)


@contextmanager
def with_gradients(lalm: HookedLALM, keys: Sequence[tuple[str, int]]) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
    """Within the block a forward keeps each (site, layer) activation of `keys` in the graph (read back from the
    yielded dict, .grad filled by a backward); the graph starts at the decoder's input embeddings, no weight in it."""
    acts: dict[tuple[str, int], torch.Tensor] = {}

    def keep(key):
        def read(x: torch.Tensor) -> None:
            x.retain_grad()
            acts[key] = x

        return read

    def leaf(mod, args, kwargs):  # gradients need a leaf: the decoder's input embeddings
        return args, {**kwargs, "inputs_embeds": kwargs["inputs_embeds"].detach().requires_grad_(True)}

    handle = lalm.decoder.register_forward_pre_hook(leaf, with_kwargs=True)
    try:
        with frozen(lalm.model), torch.enable_grad(), hooked(lalm, reads={k: keep(k) for k in keys}):
            yield acts
    finally:
        handle.remove()


def _corrupt_with_grads(lalm: HookedLALM, pair: Pair, sites: Sequence[str], label_ids: Sequence[int], attention):
    """Corrupted forward keeping each site's activation in the graph, then one backward of the logit difference;
    returns the activations (with .grad), the attention record (`attention` is a capture context or a null one)
    and the corrupted run's logit difference."""
    keys = [(s, la) for s in sites for la in range(lalm.n_layers)]
    with with_gradients(lalm, keys) as acts, embed_noise(lalm, pair.embed_noise), attention as att:
        batch = pair.corrupt.to(lalm.device, lalm.dtype)
        logits = lalm.model(**batch.tensors, use_cache=False, logits_to_keep=1).logits[:, -1]
        metric = final_metrics(logits, label_ids, pair.label, logits.detach())["logit_diff"].sum()
        metric.backward()
    return acts, att, float(metric.detach())


def head_attribution(
    lalm: HookedLALM, batch: Batch, layers: Sequence[int], query: str, key: str, label_ids: Sequence[int], truth: int
) -> torch.Tensor:
    """AtP over heads: each head's knockout (query -> key blocked in that head alone, at one layer) estimated as
    (its output with the layer's heads blocked - its clean output) . d logit difference / d its output, at the final
    position; (len(layers), heads). A head's output at its own layer does not depend on the other heads' masks, so
    one forward with every head of a layer blocked gives each head's knocked-out output exactly; only what the
    later layers make of it is linearized. One forward and one backward per clip; the blocked rows run batched on the
    query positions alone, resumed from the clean run at their layer (as the knockout engine runs them)."""
    keys = [("head_out", la) for la in layers]
    with with_gradients(lalm, keys) as acts:
        logits = lalm.model(**batch.to(lalm.device, lalm.dtype).tensors, use_cache=False, logits_to_keep=1).logits
        final_metrics(logits[:, -1], label_ids, truth, logits[:, -1].detach())["logit_diff"].sum().backward()
    specs = [KnockoutSpec(la, la + 1, query, key) for la in layers]
    blocked: dict[int, torch.Tensor] = {}
    reads = {("head_out", la): (lambda x, la=la, r=r: blocked.__setitem__(la, x[r, -1].clone()))
             for r, la in enumerate(layers)}  # fmt: skip
    run = clean_run(lalm, batch)  # recorded before the reads are hooked: they read the blocked rows alone
    with hooked(lalm, reads=reads):  # the blocked rows resumed from the clean run where they start to differ
        knockout_logits(lalm, batch, specs, run=run)
    rows = []
    for la in layers:
        clean, grad = acts[("head_out", la)].detach()[0, -1], acts[("head_out", la)].grad[0, -1]
        rows.append(((blocked[la] - clean) * grad).sum(-1))
    return wide(torch.stack(rows)).cpu()


def linear_effects(clean, site: str, layer: int, a: torch.Tensor) -> torch.Tensor:
    """First-order effect of patching each position of (site, layer): (a_clean - a_corrupt) . d metric / d a, with
    `a` the corrupted run's activation holding its gradient; (positions,) float."""
    return wide(((clean[(site, layer)].to(a.dtype) - a.detach()) * a.grad)[0].sum(-1))


def attribution(
    lalm: HookedLALM,
    pairs: Sequence[Pair],
    label_ids: Sequence[int],
    sites: Sequence[str] = ("resid_pre",),
    qk_fix: bool = True,
) -> pd.DataFrame:
    """AtP estimates of the restored logit difference for every (site, layer, position) of every pair: `atp` is
    AtP* for resid_pre when `qk_fix` (the plain first-order estimate stays in `atp_linear`)."""
    bad = [s for s in sites if s not in ATP_SITES]
    if bad:
        raise PatchlabError(f"attribution patching does not support sites {bad}", f"use {', '.join(ATP_SITES)}")
    rows = []
    for pair in pairs:
        fix = qk_fix and "resid_pre" in sites
        with capture_attention(lalm) if fix else nullcontext() as clean_att:
            clean = record(lalm, pair.clean, list(sites), device=None)
        lo = clean.final_logits
        clean_metric = float(final_metrics(lo, label_ids, pair.label, lo)["logit_diff"][0])
        attention = capture_attention(lalm) if fix else nullcontext()
        acts, corrupt_att, corrupt_metric = _corrupt_with_grads(lalm, pair, sites, label_ids, attention)
        den = clean_metric - corrupt_metric
        for (site, layer), a in acts.items():
            linear = linear_effects(clean, site, layer, a)
            est = linear + qk_correction(clean_att, corrupt_att, layer) if fix and site == "resid_pre" else linear
            for pos, (e, lin) in enumerate(zip(est.tolist(), linear.tolist())):
                rows.append(
                    dict(
                        sample=pair.sample,
                        site=site,
                        layer=layer,
                        position=pos,
                        atp=e,
                        atp_linear=lin,
                        atp_restored=e / den if abs(den) > 1e-6 else float("nan"),
                    )
                )
    return pd.DataFrame(rows)


def verify_top(
    lalm: HookedLALM, pairs: Sequence[Pair], estimates: pd.DataFrame, label_ids: Sequence[int], k: int = 20
) -> pd.DataFrame:
    """Real patching of each pair's K cells with the largest |AtP estimate|, side by side with the estimates."""
    out = []
    for pair in pairs:
        top = (
            estimates[estimates["sample"] == pair.sample]
            .reindex(estimates[estimates["sample"] == pair.sample]["atp"].abs().sort_values(ascending=False).index)
            .head(k)
        )
        specs = [PatchSpec(int(r.layer), r.site, (int(r.position),)) for r in top.itertuples()]
        real = patch(lalm, [pair], specs, label_ids, progress=False).table
        top = top.reset_index(drop=True)
        top["real_restored"] = real["logit_diff_restored"].to_numpy()
        top["real"] = (real["logit_diff"] - real["corrupt_logit_diff"]).to_numpy()
        out.append(top)
    return pd.concat(out, ignore_index=True)
