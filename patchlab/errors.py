"""One error type for bad input, so every message names the input and the fix."""

from __future__ import annotations


class PatchlabError(ValueError):
    """Bad input to patchlab: the message says which input and how to fix it."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}\n  fix: {fix}")
