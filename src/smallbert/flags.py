"""What the entry scripts share to define their flags, without importing MindSpore (so `--help` is instant).

A flag's default is written once, in the package: in the config dataclass (or function) the flag feeds.
`set_defaults_from` copies it into the parser and `HelpFormatter` prints it in `--help`.
"""
from __future__ import annotations

import argparse
import inspect
import os
from typing import Any, Callable


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's own line breaks and ends every flag's help with its default, if it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # Switches (store_true: nargs 0, but --x/--no-x pairs) and flags without a default have nothing to show.
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if ("%(default)" in text or action.default in (None, argparse.SUPPRESS) or action.required or switch
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def set_defaults_from(parser: argparse.ArgumentParser, *sources: Callable[..., Any]) -> None:
    """Sets the default of every flag whose dest is a keyword of one of `sources` (config dataclasses or
    functions) with a default, to that default. Flags the sources don't name keep theirs."""
    defaults = {}
    for source in sources:
        defaults.update({name: p.default for name, p in inspect.signature(source).parameters.items()
                         if p.default is not inspect.Parameter.empty})
    for action in parser._actions:  # argparse's own list; argument groups add to it as well
        if action.dest in defaults and action.option_strings:
            action.default = defaults[action.dest]


def add_compile_cache_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kwargs) -> None:
    """`--compile_cache {true,false}` (`smallbert.compile_cache`); `kwargs` go to `add_argument` (e.g. default)."""
    parser.add_argument("--compile_cache", type=boolean, metavar="{true,false}",
                        help="keep the compiled graphs under ~/.cache/smallbert/compile/, keyed by everything that "
                             "shapes them, so a repeated run of the same setup skips compilation "
                             "($SMALLBERT_COMPILE_CACHE=0 also turns it off)", **kwargs)


def path(text: str) -> str:
    """An argparse `type` for file and directory flags: the absolute path, so messages and logs name the real
    file (`data: ...` alone reads like a label, and a tool run from another directory would mislead)."""
    return os.path.abspath(os.path.expanduser(text))


def boolean(text: str) -> bool:
    """An argparse `type` for true/false flags: true/false, 1/0, yes/no, on/off (any case)."""
    value = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value
