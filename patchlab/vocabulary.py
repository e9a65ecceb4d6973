"""The names configs and commands choose from (corruptions, metrics, sites, regions, prompt formats, label spaces), in
one light module: the config schema imports them without loading torch, and each computing module imports its own."""

from __future__ import annotations

CORRUPTIONS = ("swap", "noise", "silence", "text")  # how a clean input is corrupted (patchlab.corrupt)
METRICS = ("logit_diff", "logprob", "prob", "acc", "kl")  # final-position metrics (patchlab.metrics)
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out")  # hook sites (patchlab.hooks)
RECORD_SITES = SITES[:-1]  # the sites a clean run records whole (head_out is per head: patched, not recorded)
REGION_NAMES = ("audio", "transcript", "text", "special", "final", "all")  # regions of a prompt (patchlab.regions)
FORMATS = ("direct", "qa", "mc")  # prompt formats (patchlab.data.prompts)
LABEL_SPACES = ("auto", "none", "space")  # how a label is verbalized after the prompt (patchlab.data.prompts)
