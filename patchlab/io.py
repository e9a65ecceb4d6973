"""Writing results: atomic files (write to a temporary name, then rename) and JSON without NaN."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .outdir import record


def json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write text or bytes so a reader never sees a half-written file, even if the process is killed; inside an
    output folder patchlab owns, the file is listed in its manifest first, and a file of the user's is refused."""
    path = Path(path)
    record(path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: dict) -> Path:
    """JSON with NaN/inf written as null (so any JSON reader accepts it)."""
    return write_atomic(path, json.dumps(json_safe(data), indent=2) + "\n")


def write_table(path: str | Path, table: pd.DataFrame) -> Path:
    """A tidy CSV table, written atomically."""
    return write_atomic(path, table.to_csv(index=False))


ID_COLUMNS = {"sample": str, "id": str, "clip": str, "track": str, "label": str}  # names: never re-typed as numbers


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table patchlab wrote: only empty fields are missing values (a clip named 'nan' or 'NA' stays a name), and
    a clip's id stays the string it was ('001' is not the number 1);
    a table without columns (e.g. no clip of a shard patched) is an empty frame."""
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=ID_COLUMNS)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
