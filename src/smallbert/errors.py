"""User-facing errors: one line, naming the file, line or flag at fault."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class SmallBertError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""


def cli_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wraps an entry point so a SmallBertError becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs) or 0
        except SmallBertError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
