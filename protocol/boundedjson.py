"""JSON from outside the process, parsed with a bound on nesting.

Python's ``json`` module recurses once per level of nesting: a 5 KB document of 2,000 nested ``[``
raises :class:`RecursionError` (not :class:`ValueError`) from inside the parser, and code that
catches the parser's errors as ``ValueError`` lets it through (issue 12: one unsigned MQTT message
ended the daemon that way). :func:`loads` checks the nesting first, without recursion and without
decoding, and refuses anything deeper than the caller allows with a ``ValueError`` that says so; only
then does it hand the text to ``json``.

The check strips JSON strings (a ``[`` inside a string is not nesting) and keeps only the brackets;
a run of more openers than allowed is refused at once (the naive bomb); otherwise the innermost
pairs (``[]``, ``{}``) are removed by a C regex once per allowed level, and anything left is deeper
than allowed (or its brackets do not match, which ``json`` would refuse anyway). Input with no more
openers than allowed levels is not even scanned. bench/bench_hostile.py measures it.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Final

# A JSON string: a quote, then runs of ordinary characters and escapes (the "unrolled loop" form,
# linear and without backtracking), then a quote.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_STEP: Final = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

_PAIR: Final = re.compile(rb"\[\]|\{\}")
DEFAULT_DEPTH: Final = 32  # deeper than anything the agent reads or writes, far below the recursion limit


def depth(data: bytes) -> int:
    """How deeply the arrays and objects of ``data`` nest (0 for a scalar); never recurses.

    On text that is not JSON the answer is an upper bound, which is all :func:`loads` needs.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, *accumulate(map(_STEP.__getitem__, brackets)))


def exceeds(raw: bytes, max_depth: int) -> bool:
    """Whether ``raw`` nests deeper than ``max_depth`` (or, past the cheap checks, its brackets do not match)."""
    # Each level needs an opening bracket: input with few of them cannot nest deeply (the common case).
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if re.search(rb"[\[{]{%d}" % (max_depth + 1), brackets):
        return True  # more openers in a row than levels allowed: the naive bomb, refused at once
    for _ in range(max_depth):
        reduced = _PAIR.sub(b"", brackets)
        if len(reduced) == len(brackets):
            break  # nothing pairs up: not JSON
        brackets = reduced
    return bool(brackets)


def check_depth(raw: bytes, max_depth: int) -> None:
    """``ValueError`` if ``raw`` nests deeper than ``max_depth``."""
    if exceeds(raw, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")


def loads(
    data: str | bytes | bytearray, *, max_depth: int = DEFAULT_DEPTH, decoder: json.JSONDecoder | None = None
) -> Any:
    """``json.loads`` for untrusted input: ``ValueError`` on bad JSON and on nesting beyond ``max_depth``.

    ``decoder`` decodes instead of the default one (the JWS header's refuses duplicate members).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    check_depth(raw, max_depth)
    try:
        if decoder is not None:
            return decoder.decode(raw.decode("utf-8"))
        return json.loads(raw)
    except RecursionError:  # pragma: no cover -- check_depth refuses such input first
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
