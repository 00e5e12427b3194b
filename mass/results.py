"""Result files and their statistics, shared by every command that writes results."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n (sound at 0 and 1, unlike Wald)."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: rounding would leave 0.99999...
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def write_json(obj: dict, path: Path) -> None:
    """Write atomically (UTF-8): the file appears complete or not at all, and a failed write
    leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(result: dict, table: str, out: Path, name: str) -> None:
    """A benchmark's OUT/NAME.json (the result) and OUT/NAME.md (its table); the table is printed."""
    write_json(result, out / f"{name}.json")
    (out / f"{name}.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"wrote {out / name}.json and .md")
