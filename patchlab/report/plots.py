"""PNG plots: information-score heatmaps with critical layers, patching heatmaps and curves, grounding bands."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def lens_heatmap(matrix: pd.DataFrame, critical: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Layers (rows) x position groups (columns) of information scores; a marker at each critical layer."""
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * matrix.shape[1] + 2), max(3.5, 0.22 * matrix.shape[0] + 1.5)))
    im = ax.imshow(matrix.to_numpy(), aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=60, ha="right", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("layer")
    for j, col in enumerate(matrix.columns):
        c = critical.get(col, float("nan"))
        if not math.isnan(c):
            ax.plot(j, c, marker="D", color="red", markersize=6, markeredgecolor="white")
    ax.plot([], [], "D", color="red", label="critical layer")
    ax.legend(loc="upper right", fontsize=7)
    fig.colorbar(im, ax=ax, label="information score")
    ax.set_title(title or "logit lens: information score", fontsize=10)
    return _save(fig, path)


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
    return _save(fig, path)


def region_curves(table: pd.DataFrame, value: str, path: str | Path, title: str = "") -> Path:
    """One line per region: the metric (mean over samples, with a min-max band) against layer."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for region, g in table.groupby("position"):
        agg = g.groupby("layer")[value].agg(["mean", "min", "max"])
        ax.plot(agg.index, agg["mean"], marker="o", ms=3, label=str(region))
        ax.fill_between(agg.index, agg["min"], agg["max"], alpha=0.15)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("layer")
    ax.set_ylabel(value)
    ax.legend(fontsize=8)
    ax.set_title(title or value, fontsize=10)
    return _save(fig, path)


def grounding_curves(per_layer: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Delta_audio, Delta_text, Delta_final and the share S against layer, each with its confidence band."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for col, label in (("delta_audio", "Δ audio"), ("delta_text", "Δ text"), ("delta_final", "Δ final")):
        ax.plot(per_layer["layer"], per_layer[col], marker="o", ms=3, label=label)
        ax.fill_between(per_layer["layer"], per_layer[f"{col}_lo"], per_layer[f"{col}_hi"], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("normalized restoration")
    ax.legend(fontsize=8)
    bx.plot(per_layer["layer"], per_layer["share"], marker="o", ms=3, color="purple", label="S (audio share)")
    bx.fill_between(per_layer["layer"], per_layer["share_lo"], per_layer["share_hi"], alpha=0.2, color="purple")
    bx.axhline(0, color="grey", lw=0.5)
    bx.set_ylim(-1.05, 1.05)
    bx.set_xlabel("layer")
    bx.set_ylabel("S = Δa / (|Δa| + |Δt|)")
    bx.legend(fontsize=8)
    fig.suptitle(title or "grounding", fontsize=10)
    return _save(fig, path)
