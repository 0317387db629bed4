"""Lists as the seed's pages show them: a search box, a sort by a column, "Lines per page" and page
numbers, all in the query string (a list can be bookmarked and shared)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request

T = TypeVar("T")
LINES: Final = (10, 20, 50, 100)


class Pages(NamedTuple):
    number: int
    last: int
    total: int
    lines: int


def _int(text: str, default: int) -> int:
    return int(text) if text.isdigit() and len(text) < 7 else default


def paged(rows: Sequence[T], request: Request) -> tuple[list[T], Pages]:
    lines = _int(request.query_params.get("lines", ""), LINES[0])
    lines = lines if lines in LINES else LINES[0]
    last = max(1, -(-len(rows) // lines))
    number = min(max(1, _int(request.query_params.get("page", ""), 1)), last)
    start = (number - 1) * lines
    return list(rows[start : start + lines]), Pages(number, last, len(rows), lines)


def searched(rows: Sequence[T], request: Request, *fields: Callable[[T], str]) -> list[T]:
    needle = request.query_params.get("q", "")[:100].strip().casefold()
    if not needle:
        return list(rows)
    return [r for r in rows if any(needle in (f(r) or "").casefold() for f in fields)]


def sorted_by(rows: Sequence[T], request: Request, keys: dict[str, Callable[[T], Any]], default: str) -> list[T]:
    asked = request.query_params.get("sort", default)
    name = asked.lstrip("-")
    key = keys.get(name) or keys[default]
    return sorted(rows, key=key, reverse=asked.startswith("-"))


def listed(rows: Sequence[T], request: Request) -> dict[str, Any]:
    """A list page's context: this page's rows, the pages, the query maker and the search as typed."""
    shown, pages = paged(rows, request)
    return {"rows": shown, "pages": pages, "query": query_maker(request), "q": request.query_params.get("q", "")[:100]}


def query_maker(request: Request) -> Callable[..., str]:
    """``query(page=2)``: this page's query string with some values changed (for links in templates)."""

    def query(**changes: Any) -> str:
        values = {k: v for k, v in request.query_params.items() if k not in ("done",)}
        values.update({k: str(v) for k, v in changes.items()})
        return urlencode(values)

    return query
