"""Compiling the project's C++ sources on first use, cached per source, flags, compiler and CPU.

Each `.cc` ships as source and is built with the system's C++ compiler (`$CXX`, else `g++`) into
`$SMALLBERT_CACHE_DIR` (default `~/.cache/smallbert`), for this CPU when the flags say `-march=native`. Users of a
library fall back to a Python or MindSpore path, with a one-line warning, when it cannot be built. Imports nothing
heavy, so data-pipeline worker processes can use it without MindSpore.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import time

logger = logging.getLogger("smallbert")


def _cpu_signature() -> str:
    """The CPU model and flags: a library built with -march=native must not be reused on another CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return ""


def compiler() -> str:
    return os.environ.get("CXX") or "g++"


def cache_path(source: str, flags: list[str]) -> str:
    """Where the library built from `source` with `flags` by this compiler for this CPU lives (built or not)."""
    with open(source, "rb") as f:
        text = f.read()
    try:
        version = subprocess.run([compiler(), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    key = hashlib.sha256(b"\0".join(x.encode() if isinstance(x, str) else x for x in
                                    (text, " ".join(flags), version, _cpu_signature()))).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(cache_dir(), f"{stem}-{key}.so")


def cache_dir() -> str:
    """$SMALLBERT_CACHE_DIR, else $XDG_CACHE_HOME/smallbert, else ~/.cache/smallbert: built kernels, compiled graphs."""
    return os.environ.get("SMALLBERT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "smallbert")


def build(source: str, flags: list[str], what: str, fallback: str, path: str | None = None) -> str | None:
    """Path of the shared library compiled from `source` (at `path`, default `cache_path`), building it if missing.

    Returns None, after the warning "<what>: <reason>; <fallback>", if no compiler is found or it fails.
    """
    if shutil.which(compiler()) is None:
        logger.warning("%s: no C++ compiler (%s) found; %s", what, compiler(), fallback)
        return None
    path = path or cache_path(source, flags)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    start = time.perf_counter()
    try:
        result = subprocess.run([compiler(), *flags, "-o", tmp, source], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["unknown error"])[0]
            logger.warning("%s: %s failed (%s); %s", what, compiler(), first, fallback)
            return None
        os.replace(tmp, path)  # atomic: concurrent processes may build the same library
        logger.info("%s: built %s in %.1f s", what, path, time.perf_counter() - start)
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("%s: could not build (%s); %s", what, err, fallback)
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


DATA_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]


def load_data_library(source: str, what: str, fallback: str) -> ctypes.CDLL | None:
    """The data tool's library built from `source`, loaded; None if SMALLBERT_NATIVE_DATA=0 or it can't be built."""
    if os.environ.get("SMALLBERT_NATIVE_DATA", "1") == "0":
        return None
    path = build(source, DATA_FLAGS, what, fallback)
    return None if path is None else ctypes.CDLL(path)
