"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one."""
from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_open(path: str) -> Iterator[IO[str]]:
    """Opens `<path>.tmp-<pid>` for writing text; on success renames it to `path`, on failure removes it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, value: Any, sort_keys: bool = False) -> None:
    """Writes `value` as indented JSON plus a newline, atomically."""
    with atomic_open(path) as f:
        json.dump(value, f, indent=2, sort_keys=sort_keys)
        f.write("\n")
