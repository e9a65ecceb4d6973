"""The tuned lens (Belrose et al. 2023): a learned affine translator per layer applied before the final norm and the
unembedding, trained so each layer's read-out matches the model's own final distribution (KL over the whole
vocabulary). Translators are low rank (h + U V h + b) so the small models' can be committed; the last layer's is
the identity, so its read-out is the model's logits exactly, as with the logit lens."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from .data import FORMATS, Sample, build_prompt, load_clip
from .errors import PatchlabError
from .hooks import hooked
from .io import write_atomic, write_json
from .models.base import Batch, HookedLALM
from .provenance import model_fingerprint

WEIGHTS = "tuned_lens.safetensors"
COMMITTED = Path(__file__).parent / "mini" / "tuned_lens"  # the small models' translators: <model>.safetensors
_LOADED: dict[tuple[str, int], Translators] = {}


class Translators(nn.Module):
    """One low-rank affine map per layer, h -> h + (h V_l) U_l + b_l; the identity before training and at the last
    layer (whose read-out stays the model's own logits)."""

    def __init__(self, n_layers: int, d_model: int, rank: int) -> None:
        super().__init__()
        self.n_layers, self.d_model, self.rank = n_layers, d_model, rank
        self.down = nn.Parameter(torch.zeros(n_layers, d_model, rank))
        self.up = nn.Parameter(torch.zeros(n_layers, rank, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        if layer == self.n_layers - 1:
            return h
        d, u, b = (t[layer].to(h.dtype) for t in (self.down, self.up, self.bias))
        return h + (h @ d) @ u + b


def digest(path: Path) -> str:
    """What identifies a file whatever its name (a clip's audio for the leakage check, the weights for a run)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_translators(path: str | Path, lalm: HookedLALM) -> tuple[Translators, dict]:
    """Translators from `path` (a .safetensors with its tuned_lens.json card beside it), refused unless they were
    trained for this model's shape."""
    path = Path(path).expanduser()
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise PatchlabError(
            f"no tuned lens at {path} (the weights and {card_path.name} beside them)",
            "train one with `patchlab tuned-lens --model MODEL --data DIR --out DIR` and give lens.translators",
        )
    try:
        card = json.loads(card_path.read_text())
        tensors = load_file(str(path))
        shape = (int(card["n_layers"]), int(card["d_model"]), int(card["rank"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PatchlabError(f"{path} is not a tuned lens patchlab wrote ({e})", "train it again") from None
    if shape[:2] != (lalm.n_layers, lalm.d_model):
        raise PatchlabError(
            f"the tuned lens {path} is for {shape[0]} layers of width {shape[1]}, the model has {lalm.n_layers} of "
            f"{lalm.d_model}",
            "give translators trained for this model",
        )
    t = Translators(*shape)
    try:
        t.load_state_dict(tensors)
    except RuntimeError as e:
        raise PatchlabError(f"{path} does not match its card ({e})", "train it again") from None
    return t.to(lalm.device).eval().requires_grad_(False), card


def translators_path(model: str, given: str | dict[str, str] | None) -> Path:
    """Where `model`'s translators are: `lens.translators` (one path, or a path per model), else the committed ones
    of patchlab's small models."""
    if isinstance(given, dict):
        given = given.get(model)
    if given:
        return Path(given).expanduser()
    committed = COMMITTED / f"{model}.safetensors"
    if committed.is_file():
        return committed
    raise PatchlabError(
        f"lens.kind tuned needs a tuned lens for {model}: lens.translators names none",
        "train one with `patchlab tuned-lens --model MODEL --data DIR --out DIR` and set lens.translators to "
        "DIR/tuned_lens.safetensors (or {MODEL: path} for several models)",
    )


def check_held_out(path: Path, samples: Sequence[Sample], model: str | None = None) -> None:
    """Refuse to read clips through translators trained on them (the card lists the training clips' audio digests),
    translators that are not there, and (given `model`) translators trained for other weights of the model."""
    if not Path(path).is_file():
        raise PatchlabError(
            f"no tuned lens at {path}", "train one with `patchlab tuned-lens --model MODEL --data DIR --out DIR`"
        )
    try:
        card = json.loads(Path(path).with_suffix(".json").read_text())
        trained = set(card["training_clips"])
    except (OSError, ValueError, KeyError, TypeError):
        raise PatchlabError(
            f"no readable card beside the tuned lens {path} ({Path(path).with_suffix('.json').name})",
            "train it with `patchlab tuned-lens`, which writes both",
        ) from None
    trained_for = card.get("model_fingerprint")
    if model is not None and trained_for and trained_for != model_fingerprint(model):
        raise PatchlabError(
            f"the tuned lens {path} was trained for other weights of {model} ({trained_for}; now "
            f"{model_fingerprint(model)})",
            "train a tuned lens for these weights with `patchlab tuned-lens`",
        )
    seen = [s for s in samples if digest(s.path) in trained]
    if seen:
        raise PatchlabError(
            f"{len(seen)} clips (first: {seen[0].track}/{seen[0].id}) were used to train the tuned lens {path}",
            "analyse clips the tuned lens was not trained on, or train it on other clips",
        )


def translators_for(lalm: HookedLALM, model: str, given: str | dict[str, str] | None) -> Translators:
    """The translators of `model` (loaded as `lalm`), loaded once per process and model."""
    path = translators_path(model, given)
    key = (str(path.resolve()), id(lalm))
    if key not in _LOADED:
        _LOADED[key] = load_translators(path, lalm)[0]
    return _LOADED[key]


def _positions(length: int, k: int, rng: np.random.Generator) -> list[int]:
    """The final position and k - 1 others drawn without replacement (the lens reads every position)."""
    rest = rng.choice(length - 1, size=min(k - 1, length - 1), replace=False)
    return sorted({length - 1, *map(int, rest)})


def collect(
    lalm: HookedLALM, samples: Sequence[Sample], formats: Sequence[str], per_clip: int, seed: int, desc: str
) -> tuple[torch.Tensor, list[str]]:
    """The residual stream after every layer at `per_clip` positions of each clip under each prompt format:
    (positions, layers, d_model) in float32, and the clip ids they come from."""
    rng = np.random.default_rng(seed)
    out, ids = [], []
    for s in tqdm(samples, desc=desc, unit="clip"):
        wave = load_clip(lalm, s.path)
        for fmt in formats:
            batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(s, fmt), id=s.id, label=s.label)
            length = batch.tensors["input_ids"].shape[1]
            pos = _positions(length, per_clip, rng)
            out.append(states(lalm, batch, pos).float())
            ids += [s.id] * len(pos)
    return torch.cat(out), ids


def states(lalm: HookedLALM, batch: Batch, positions: Sequence[int]) -> torch.Tensor:
    """The residual stream after every layer at `positions` of one prepared clip: (positions, layers, d_model)."""
    pos = torch.tensor(list(positions))
    got: list[torch.Tensor | None] = [None] * lalm.n_layers
    reads = {("resid_post", la): (lambda h, la=la: got.__setitem__(la, h[0, pos].cpu())) for la in range(lalm.n_layers)}
    with torch.no_grad(), hooked(lalm, reads=reads):
        lalm.model(**batch.to(lalm.device, lalm.dtype).tensors, use_cache=False, logits_to_keep=1)
    return torch.stack(got, 1)  # type: ignore[arg-type]


def kl_per_layer(lalm: HookedLALM, h: torch.Tensor, translators: Translators | None, chunk: int = 64) -> torch.Tensor:
    """KL(final distribution || each layer's read-out) over the whole vocabulary, per position and layer (positions,
    layers), through the logit lens (`translators` None) or the tuned lens."""
    out = []
    with torch.no_grad():
        for i in range(0, len(h), chunk):
            out.append(_kl(lalm, h[i : i + chunk].to(lalm.device), translators).cpu())
    return torch.cat(out)


def _kl(lalm: HookedLALM, h: torch.Tensor, translators: Translators | None) -> torch.Tensor:
    """(positions, layers) KL of each layer's read-out from the last layer's, h: (positions, layers, d); in float64
    for a float64 model, else float32."""
    wide = torch.float64 if lalm.dtype == torch.float64 else torch.float32
    target = lalm.unembed(h[:, -1]).to(wide).log_softmax(-1)
    p = target.exp()  # once, not per layer: (positions, vocabulary) in the training loop's hot path
    rows = []
    for la in range(h.shape[1]):
        x = h[:, la].to(lalm.dtype)
        x = translators(x, la) if translators is not None else x
        q = lalm.unembed(x).to(wide).log_softmax(-1)
        rows.append((p * (target - q)).sum(-1))
    return torch.stack(rows, 1)


def train_translators(
    lalm: HookedLALM,
    samples: Sequence[Sample],
    held_out: Sequence[Sample],
    formats: Sequence[str] = FORMATS,
    rank: int = 16,
    epochs: int = 8,
    batch: int = 32,
    lr: float = 1e-3,
    per_clip: int = 12,
    seed: int = 0,
) -> tuple[Translators, dict]:
    """Translators fitted on `samples` (minimizing the summed per-layer KL to the final distribution), with the
    held-out clips' KL per layer under both lenses and the training log (loss per epoch, seconds)."""
    if not samples or not held_out:
        raise PatchlabError("the tuned lens needs training clips and held-out clips", "give --data with more clips")
    torch.manual_seed(seed)
    start = time.perf_counter()
    h, _ = collect(lalm, samples, formats, per_clip, seed, "tuned lens: reading the training clips")
    h_val, _ = collect(lalm, held_out, formats, per_clip, seed + 1, "tuned lens: reading the held-out clips")
    read_s = time.perf_counter() - start
    t = Translators(lalm.n_layers, lalm.d_model, rank).to(lalm.device)
    nn.init.normal_(t.down, std=1.0 / math.sqrt(lalm.d_model))
    lalm.model.requires_grad_(False)
    opt = torch.optim.Adam(t.parameters(), lr=lr)
    steps = epochs * math.ceil(len(h) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(total=steps, desc="tuned lens: training", unit="step")
    for _ in range(epochs):
        order, total = torch.randperm(len(h), generator=gen), 0.0
        for i in range(0, len(h), batch):
            x = h[order[i : i + batch]].to(lalm.device)
            with torch.enable_grad():
                loss = _kl(lalm, x, t)[:, :-1].sum(1).mean()
                opt.zero_grad()
                loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(x)
            bar.update()
        losses.append(total / len(h))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    t.eval().requires_grad_(False)
    logit, tuned = kl_per_layer(lalm, h_val, None), kl_per_layer(lalm, h_val, t)
    log = {
        "n_layers": lalm.n_layers, "d_model": lalm.d_model, "rank": rank, "epochs": epochs, "batch": batch, "lr": lr,
        "positions_per_clip": per_clip, "formats": list(formats), "seed": seed,
        "training_positions": len(h), "held_out_positions": len(h_val),
        "loss_per_epoch": losses, "seconds_reading": round(read_s, 1),
        "seconds_total": round(time.perf_counter() - start, 1),
        "held_out_kl_logit": logit.mean(0).tolist(), "held_out_kl_tuned": tuned.mean(0).tolist(),
    }  # fmt: skip
    return t, log


def save_translators(t: Translators, out: Path, card: dict) -> Path:
    """The translators as safetensors and their card (training log, training clips' audio digests) beside them."""
    path = Path(out) / WEIGHTS
    write_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in t.state_dict().items()}))
    write_json(path.with_suffix(".json"), {**card, "weights_sha256": digest(path)})
    return path
