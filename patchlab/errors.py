"""One error type for bad input, so every message names the input and the fix."""

from __future__ import annotations


class PatchlabError(ValueError):
    """Bad input to patchlab: the message says which input and how to fix it."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}\n  fix: {fix}")


def nonfinite_fix(dtype: object) -> str:
    """The likely cause of NaN/inf activations from finite audio: half-precision overflow, else the weights."""
    if str(dtype) in ("torch.float16", "torch.bfloat16", "float16", "bfloat16"):
        return "half precision overflowed: load the model with dtype=float32 (patchlab --dtype float32)"
    return "the weights hold NaN/inf or overflow (patchlab.load checks the weights on disk): check the checkpoint"
