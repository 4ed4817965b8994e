"""MindSpore's graph compile cache, keyed so that a run only ever loads graphs compiled for exactly its setup.

MindSpore 2.10's cache (MS_COMPILER_CACHE_ENABLE / MS_COMPILER_CACHE_PATH) writes a process's graphs as
compile_cache_0.mindir, compile_cache_1.mindir, ... in the order they are compiled; a later process loads them by
that index, checking only a hash of the Python files involved. Measured on CPU: a 1-layer model run against a
2-layer run's cache trained the 2-layer graph and logged wrong losses, without an error; a run without the first
run's evaluation graph loaded it as its train step and crashed. So every distinct setup gets a directory of its
own, named by a hash of everything that decides which graphs are compiled and in what order: the run's flags
(paths and logging aside), the model config, the data's shapes, the step it resumes from, the world size, the
MindSpore version, this package's source files (its kernels included) and whether the fused kernels are on.
A repeated run of the same setup then skips graph compilation (about 25 s → 2 s for the sample's L2-H128).

`SMALLBERT_COMPILE_CACHE=0` turns it off, as does `--compile_cache false`; so should anyone who patches model
code at run time (the source hash cannot see it). Entries are ~1 MB each under `native.cache_dir()/compile/`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
from typing import Iterator

from . import native

logger = logging.getLogger("smallbert")
ENV_SWITCH = "SMALLBERT_COMPILE_CACHE"


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """sha256 of this package's .py and .cc files (names and contents)."""
    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith((".py", ".cc"))):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()


def directory(setup: dict) -> str:
    """The cache directory for `setup` (a JSON-able dict of what decides the graphs), with the MindSpore version,
    the package source and the fused-kernel state added to the key."""
    import mindspore as ms

    from . import cpu_kernels

    key = {"setup": setup, "mindspore": ms.__version__, "source": source_digest(),
           "kernels": cpu_kernels.library() if cpu_kernels.enabled() else None}
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return os.path.join(native.cache_dir(), "compile", name)


@contextlib.contextmanager
def session(setup: dict | None) -> Iterator[str | None]:
    """Inside, MindSpore caches the graphs this process compiles in `directory(setup)` (and loads them from there
    on a repeat); yields that directory, or None when off. Off: `setup` None, $SMALLBERT_COMPILE_CACHE=0, an entry
    script that is not a file (MindSpore hashes it, and fails on `python -c` or stdin), or a second session in
    one process (MindSpore reads the path once per process and numbers graphs across it, so a second setup's
    graphs would land in the first one's entry). Caching is switched off again on exit, so graphs compiled later
    by other code never enter the entry.
    """
    global _used
    if setup is None or (reason := _off_reason()) is not None:
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
        if setup is not None:
            logger.info("compile cache: off (%s)", reason)
        yield None
        return
    path = _used = directory(setup)
    found = os.path.isdir(os.path.join(path, "rank_0"))
    os.environ["MS_COMPILER_CACHE_PATH"] = path
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    logger.info("compile cache: %s (%s)", path, "reusing its graphs" if found else "new; graphs are saved there")
    try:
        yield path
    finally:
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"


def _off_reason() -> str | None:
    """Why this process cannot use the cache now, or None if it can."""
    if os.environ.get(ENV_SWITCH) == "0":
        return f"${ENV_SWITCH}=0"
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main or not os.path.isfile(main):
        return f"the entry point {main!r} is not a script file"
    if _used:
        return f"this process already cached its graphs in {_used}"
    return None


_used: str | None = None
