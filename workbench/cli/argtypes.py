"""Argument types that check a flag's value when it is parsed, before any work is done.

argparse prefixes the message with the option (`argument --steps: ...`), so an error names
the option, the value and the fix in one line.

>>> positive_int("12")
12
>>> positive_int("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 0 is not a positive integer; pass a whole number >= 1
>>> floats(low=0.0, low_open=True)("nan")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: nan is not a finite number; pass e.g. 0.01
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_INT = 10**9  # larger counts (steps, tokens, rows) are typos, not plans


def _int(text: str) -> int:
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass a whole number, "
                                         "e.g. 100") from None


def bounded_int(low: int, high: int = MAX_INT) -> Callable[[str], int]:
    """An integer in `[low, high]`."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; pass a whole number "
                                             f"from {low} to {high:,}")
        return value
    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1 (and at most `MAX_INT`)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer; pass a whole "
                                         "number >= 1")
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"{value:,} is too large (at most {MAX_INT:,}); pass "
                                         "a smaller number")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0 (and at most `MAX_INT`)."""
    return bounded_int(0)(text)


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**32)."""
    return bounded_int(0, 2**32 - 1)(text)


def floats(low: float | None = None, high: float | None = None, low_open: bool = False,
           example: str = "0.01") -> Callable[[str], float]:
    """A finite float within `[low, high]` (`(low, high]` with `low_open`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; pass e.g. "
                                             f"{example}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number; pass e.g. "
                                             f"{example}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"<= {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range; pass a number "
                                             f"{' and '.join(x for x in (lo, hi) if x)}")
        return value
    parse.__name__ = "number"
    return parse


def one_of(*values: str) -> Callable[[str], str]:
    """One of `values` (help text unchanged, unlike argparse `choices`)."""
    def parse(text: str) -> str:
        if text not in values:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(values)}")
        return text
    parse.__name__ = "choice"
    return parse


def int_list(low: int = 0) -> Callable[[str], str]:
    """Comma-separated integers >= `low` (`0,2,4`), kept as text for the config."""
    def parse(text: str) -> str:
        parts = names(text)
        if not parts:
            raise argparse.ArgumentTypeError(f"{text!r} is empty; pass comma-separated "
                                             "integers like 0,2,4")
        for p in parts:
            try:
                value = int(p)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: {p!r} is not an integer; pass "
                                                 "comma-separated integers like 0,2,4") from None
            if value < low:
                raise argparse.ArgumentTypeError(f"{text!r}: {value} is below {low}; pass "
                                                 f"integers >= {low}")
        return text
    parse.__name__ = "integer list"
    return parse


def names(text: str) -> tuple[str, ...]:
    """The names of a `name_list` flag's text.

    >>> names("ekfac, bm25,")
    ('ekfac', 'bm25')
    """
    return tuple(p.strip() for p in text.split(",") if p.strip())


def ints(text: str | None) -> tuple[int, ...] | None:
    """The integers of an `int_list` flag's text (None for an absent flag).

    >>> ints("0, 2"), ints(None)
    ((0, 2), None)
    """
    return None if text is None else tuple(int(p) for p in names(text))


def name_list(allowed: tuple[str, ...] | None = None) -> Callable[[str], str]:
    """Comma-separated names (`icl,rome`), each one of `allowed` when given."""
    def parse(text: str) -> str:
        parts = names(text)
        if not parts:
            raise argparse.ArgumentTypeError(f"{text!r} is empty; pass comma-separated names")
        bad = [p for p in parts if allowed is not None and p not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{', '.join(bad)} not among "
                                             f"{', '.join(allowed or ())}")
        return text
    parse.__name__ = "name list"
    return parse


def device(text: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` (whether it exists is checked when it is used)."""
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; pass auto, cpu, cuda or "
                                     "cuda:N")


def checkpoint_steps(text: str) -> str:
    """`--checkpoints`: `all`, or comma-separated steps (`0,64,512`) of a run's checkpoints.

    >>> checkpoint_steps("all"), checkpoint_steps("0,64")
    ('all', '0,64')
    >>> checkpoint_steps("0,0,30")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '0,0,30' names step 0 twice; list each step once
    """
    if text == "all":
        return text
    int_list(0)(text)
    steps = [int(p) for p in text.split(",") if p.strip()]
    if len(set(steps)) != len(steps):
        twice = sorted({s for s in steps if steps.count(s) > 1})
        raise argparse.ArgumentTypeError(f"{text!r} names step {twice[0]} twice; list each "
                                         "step once")
    return text
