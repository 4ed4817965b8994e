"""User-facing errors: one line, naming the file, line or flag at fault; and leaving no half-made output."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Callable, Iterator


class SmallBertError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""


def cli_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wraps an entry point so a SmallBertError becomes `error: <message>` on stderr and exit code 2, and
    Ctrl-C becomes `interrupted[: <what was cleaned up>]` and exit code 130, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs) or 0
        except SmallBertError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:
            print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
            return 130

    return wrapper


@contextlib.contextmanager
def output_directory(path: str, clean: Callable[[], None] | None = None) -> Iterator[bool]:
    """Creates `path` (and its parents) for a run's outputs, yielding whether this run created it.

    If the run fails (any exception, Ctrl-C included), `clean` removes its partial outputs first; then `path`
    is removed if this run created it and it is empty, so a failed run leaves no empty directory behind.
    """
    created = not os.path.isdir(path)
    os.makedirs(path, exist_ok=True)
    try:
        yield created
    except BaseException:
        if clean is not None:
            clean()
        if created and os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
        raise
