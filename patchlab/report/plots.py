"""PNG plots: information-score heatmaps with critical layers, patching heatmaps and curves, grounding bands."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..io import write_atomic  # noqa: E402

# One palette and one band convention across every plot: regions keep their colours, and every band is the 95%
# percentile bootstrap CI of the mean over clips.
REGION_COLORS = {"audio": "#1f77b4", "text": "#ff7f0e", "final": "#2ca02c", "all": "#7f7f7f", "transcript": "#9467bd"}
SHARE_COLOR = "#8c564b"
BAND = "band: 95% bootstrap CI of the mean over clips"
RESTORED = "restored logit difference\n(0 = corrupted run, 1 = clean run)"
POSITIONS = "position (text-k: k-th text token from the end; audio-x%: bin of the audio span; final: last token)"


def _band(values: pd.Series, n_boot: int = 500) -> tuple[float, float]:
    from ..stats import bootstrap_mean_ci

    return bootstrap_mean_ci(values.dropna().to_numpy(), n_boot=n_boot)


def save(fig: plt.Figure, path: str | Path) -> Path:
    """The figure laid out and written as a PNG (atomically), closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


def lens_heatmap(
    matrix: pd.DataFrame, critical: dict[str, float], path: str | Path, title: str = "", tau: float | None = None
) -> Path:
    """Layers (rows) x position groups (columns) of information scores; a marker at each critical layer, the chance
    threshold tau marked on the colour bar."""
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * matrix.shape[1] + 2), max(3.5, 0.22 * matrix.shape[0] + 1.5)))
    im = ax.imshow(matrix.to_numpy(), aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=60, ha="right", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("layer")
    ax.set_xlabel(POSITIONS, fontsize=8)
    for j, col in enumerate(matrix.columns):
        c = critical.get(col, float("nan"))
        if not math.isnan(c):
            ax.plot(j, c, marker="D", color="red", markersize=6, markeredgecolor="white")
    bar = fig.colorbar(im, ax=ax, label="information score (accuracy of the lens argmax)")
    if tau is not None:
        bar.ax.axhline(tau, color="red", lw=1.5)
        bar.ax.text(
            1.6, tau, f"τ={tau:.2f}", color="red", fontsize=7, va="center", transform=bar.ax.get_yaxis_transform()
        )
    ax.set_title(f"{title or 'logit lens: information score'}\n(red ◆: critical layer of each position)", fontsize=10)
    return save(fig, path)


def patch_heatmap(
    table: pd.DataFrame,
    value: str,
    path: str | Path,
    boundaries: dict[str, tuple[int, int]] | None = None,
    title: str = "",
) -> Path:
    """Layer x position heatmap of a metric (mean over samples), with region spans drawn as bands."""
    m = table.pivot_table(index="layer", columns="position", values=value, aggfunc="mean").sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(10, max(3.5, 0.22 * m.shape[0] + 1.5)))
    lim = max(1.0, float(m.abs().max().max()))
    im = ax.imshow(
        m.to_numpy(),
        aspect="auto",
        origin="lower",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        extent=(m.columns.min() - 0.5, m.columns.max() + 0.5, -0.5, m.shape[0] - 0.5),
    )
    for name, (lo, hi) in (boundaries or {}).items():
        ax.axvline(lo - 0.5, color="k", lw=0.8)
        ax.axvline(hi + 0.5, color="k", lw=0.8)
        ax.text((lo + hi) / 2, m.shape[0] - 0.6, name, ha="center", va="top", fontsize=8)
    ax.set_xlabel("position")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title or value, fontsize=10)
    return save(fig, path)


def region_curves(table: pd.DataFrame, value: str, path: str | Path, title: str = "") -> Path:
    """One line per region: the metric's mean over clips against layer, with its bootstrap CI band."""
    fig, ax = plt.subplots(figsize=(10, 4))
    n = table["sample"].nunique() if "sample" in table else 0
    for region, g in table.groupby("position"):
        by = g.groupby("layer")[value]
        mean = by.mean()
        lo_hi = pd.DataFrame([_band(v) for _, v in by], index=mean.index, columns=["lo", "hi"])
        color = REGION_COLORS.get(str(region))
        ax.plot(mean.index, mean, marker="o", ms=3, label=f"{region} positions", color=color)
        ax.fill_between(mean.index, lo_hi["lo"], lo_hi["hi"], alpha=0.15, color=color)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("layer patched")
    ax.set_ylabel(RESTORED if value.startswith("logit_diff") else value.replace("_", " "))
    ax.plot([], [], " ", label=f"{BAND} (n={n})")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or value, fontsize=10)
    return save(fig, path)


def grounding_curves(per_layer: pd.DataFrame, path: str | Path, title: str = "", handover: dict | None = None) -> Path:
    """Delta_audio, Delta_text, Delta_final and the share S against layer, each with its bootstrap CI band, and
    the handover layer (where Delta_text overtakes Delta_audio for good) with its CI."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8))
    for col, region in (("delta_audio", "audio"), ("delta_text", "text"), ("delta_final", "final")):
        color = REGION_COLORS[region]
        ax.plot(per_layer["layer"], per_layer[col], marker="o", ms=3, label=f"Δ {region}", color=color)
        ax.fill_between(per_layer["layer"], per_layer[f"{col}_lo"], per_layer[f"{col}_hi"], alpha=0.15, color=color)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("layer patched")
    ax.set_ylabel(RESTORED)
    bx.plot(per_layer["layer"], per_layer["share"], marker="o", ms=3, color=SHARE_COLOR, label="S (audio share)")
    bx.fill_between(per_layer["layer"], per_layer["share_lo"], per_layer["share_hi"], alpha=0.15, color=SHARE_COLOR)
    bx.axhline(0.5, color="grey", lw=0.5, ls=":")
    bx.set_ylim(-1.05, 1.05)
    bx.set_xlabel("layer patched")
    bx.set_ylabel("S = Δa / (|Δa| + |Δt|)  (0.5: equal)")
    h = (handover or {}).get("handover_layer", float("nan"))
    for axis in (ax, bx):
        if h == h:
            axis.axvline(h, color="k", ls="--", lw=0.8)
            lo, hi = handover.get("handover_lo", h), handover.get("handover_hi", h)
            axis.axvspan(lo - 0.5, hi + 0.5, color="k", alpha=0.06)
    if h == h:
        ax.plot(
            [],
            [],
            "k--",
            lw=0.8,
            label=f"handover layer {h:.0f} (CI {handover['handover_lo']:.0f}-{handover['handover_hi']:.0f})",
        )
    ax.plot([], [], " ", label=BAND)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle(title or "grounding", fontsize=10)
    return save(fig, path)


def screened_curves(per_layer: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per region: the screened estimate of the mean restoration against layer with its 95% interval (survey
    sampling's, for the mean over these clips; not a bootstrap band), and AtP's uncorrected mean dashed."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for region, g in per_layer.groupby("position", sort=False):
        color = REGION_COLORS.get(str(region))
        ax.plot(g["layer"], g["estimate"], marker="o", ms=3, label=f"{region}: screened estimate", color=color)
        ax.fill_between(g["layer"], g["lo"], g["hi"], alpha=0.15, color=color)
        ax.plot(g["layer"], g["atp_mean"], ls="--", lw=0.8, color=color, label=f"{region}: AtP alone")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("layer patched")
    ax.set_ylabel(RESTORED)
    n, v = int(per_layer["n_screened"].max()), int(per_layer["n_verified"].max())
    ax.plot([], [], " ", label=f"band: 95% interval ({n} clips screened, {v} patched for real)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=10)
    return save(fig, path)


KNOCKOUT_COLORS = {"final->audio": "#2ca02c", "text->audio": "#ff7f0e", "final->text": "#9467bd"}


def knockout_curves(curves: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per knockout: the change of the answer's logit difference when attention is blocked from layer l to the
    top, against l, with its bootstrap CI band (0: the block changes nothing)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, g in curves.groupby("knockout", sort=False):
        color = KNOCKOUT_COLORS.get(str(k))
        ax.plot(g["start"], g["logit_diff_change"], marker="o", ms=3, label=f"block {k}", color=color)
        ax.fill_between(g["start"], g["lo"], g["hi"], alpha=0.15, color=color)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("attention blocked from this layer to the last")
    ax.set_ylabel("change of the answer's logit difference\n(knocked out − clean)")
    ax.plot([], [], " ", label=f"{BAND} (n={int(curves['n'].max())})")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def answer_curves(curves: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """p(true) at the final position against layer, one line per (answer right or wrong, label), with CI bands."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for (answer, label), g in curves.groupby(["answer", "label"], sort=True):
        ls = "-" if answer == "success" else "--"
        line = ax.plot(
            g["layer"], g["p_true"], ls=ls, marker="o", ms=2, label=f"{answer}, {label} (n={g['n'].iloc[0]})"
        )
        ax.fill_between(g["layer"], g["lo"], g["hi"], alpha=0.12, color=line[0].get_color())
    ax.set_xlabel("layer")
    ax.set_ylabel("p(true label) over the label set\nat the final position")
    ax.plot([], [], " ", label=BAND)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def encoder_decoder(
    probe: pd.DataFrame, decoder: pd.DataFrame | None, path: str | Path, title: str = "", info: dict | None = None
) -> Path:
    """Left: the encoder probe's out-of-fold balanced accuracy per encoder layer (CI band, saturation layer);
    right: the decoder lens' balanced score at the final position per decoder layer. One attribute, end to end."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]}, sharey=True)
    ax.plot(probe["encoder_layer"], probe["balanced_accuracy"], marker="o", ms=3, color="#1f77b4", label="probe")
    ax.fill_between(probe["encoder_layer"], probe["lo"], probe["hi"], alpha=0.15, color="#1f77b4")
    chance = (info or {}).get("chance")
    for axis in (ax, bx):
        if chance:
            axis.axhline(chance, color="grey", lw=0.5, ls=":")
    sat = (info or {}).get("saturation_layer", float("nan"))
    if sat == sat:
        ax.axvline(sat, color="k", ls="--", lw=0.8, label=f"saturation layer {sat:.0f}")
    ax.set_xlabel("audio encoder layer")
    ax.set_ylabel("balanced accuracy (chance dotted)")
    ax.legend(fontsize=7)
    if decoder is not None:
        bx.plot(decoder["layer"], decoder["balanced_score"], marker="o", ms=3, color=REGION_COLORS["final"],
                label="decoder lens, final position (balanced)")  # fmt: skip
        bx.legend(fontsize=7)
    bx.set_xlabel("decoder layer")
    fig.suptitle(f"{title}\n(probe: {BAND.replace('of the mean ', '')})", fontsize=10)
    return save(fig, path)


def compare_grounding(layers: pd.DataFrame, models: list[str], path: str | Path, title: str = "") -> Path:
    """Left: each model's mean Delta per region against layer (solid: the first model, dashed: the others). Right:
    the paired difference of Delta_audio (other - first) with its 95% bootstrap CI; filled markers where the
    Holm-corrected p <= 0.05."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = ["-", "--", ":", "-."]
    for i, model in enumerate(models):
        rows = layers[layers["model_b"] == model] if i else layers[layers["model_b"] == layers["model_b"].iloc[0]]
        for region in ("audio", "transcript", "text", "final"):
            col = f"delta_{region}[{model}]"
            if col in rows and rows[col].notna().any():
                ax.plot(rows["layer"], rows[col], styles[i % 4], marker="o", ms=2.5, color=REGION_COLORS[region],
                        label=f"Δ {region}, {model}")  # fmt: skip
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("layer patched")
    ax.set_ylabel(RESTORED)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    for model, g in layers.groupby("model_b", sort=False):
        bx.plot(g["layer"], g["delta_audio_b_minus_a"], color=REGION_COLORS["audio"], lw=1)
        bx.fill_between(g["layer"], g["lo"], g["hi"], alpha=0.15, color=REGION_COLORS["audio"])
        sig = g["p_holm"] <= 0.05
        bx.scatter(g["layer"][sig], g["delta_audio_b_minus_a"][sig], color=REGION_COLORS["audio"], s=14, zorder=3,
                   label=f"{model} − {g['model_a'].iloc[0]}: Holm p ≤ 0.05")  # fmt: skip
        bx.scatter(g["layer"][~sig], g["delta_audio_b_minus_a"][~sig], facecolors="none", s=14,
                   edgecolors=REGION_COLORS["audio"], zorder=3)  # fmt: skip
    bx.axhline(0, color="grey", lw=0.5)
    bx.set_xlabel("layer patched")
    bx.set_ylabel("paired difference of Δ audio")
    bx.plot([], [], " ", label=f"{BAND} (n={int(layers['n'].max()) if len(layers) else 0})")
    bx.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
