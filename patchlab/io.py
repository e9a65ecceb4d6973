"""Writing results: atomic files (write to a temporary name, then rename) and JSON without NaN."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd


def json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_atomic(path: str | Path, text: str) -> Path:
    """Write text so a reader never sees a half-written file, even if the process is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: dict) -> Path:
    """JSON with NaN/inf written as null (so any JSON reader accepts it)."""
    return write_atomic(path, json.dumps(json_safe(data), indent=2) + "\n")


def write_table(path: str | Path, table: pd.DataFrame) -> Path:
    """A tidy CSV table, written atomically."""
    return write_atomic(path, table.to_csv(index=False))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table patchlab wrote: only empty fields are missing values (a clip named 'nan' or 'NA' stays a name);
    a table without columns (e.g. no clip of a shard patched) is an empty frame."""
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
