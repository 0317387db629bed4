"""The configuration reference generated from the config model (agent/config.py and the wiring's models):
every key with its type, default and the bounds the program refuses past, so that the docs cannot drift
from what the program checks. docs/configuration.md holds the whole table, README.md the bounded keys;
tests/test_docs.py fails when either is stale.

    python -m tests.support.configdoc --write
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from agent.config import Config, Secret

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
# the pages that describe a section, each with the limits of its keys
SECTIONS = {"drivers.": ROOT / "docs" / "drivers.md", "firmware.": ROOT / "docs" / "firmware.md"}
TABLE = ("<!-- config reference: begin -->", "<!-- config reference: end -->")
LIMITS = ("<!-- config limits: begin -->", "<!-- config limits: end -->")
_BOUNDS = (
    ("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="), ("max_length", "length <="),
)  # fmt: skip


def _section_in(annotation: Any) -> tuple[str, type[msgspec.Struct]] | None:
    """("", Section) for a section, ("<name>", Section) for a table of named sections."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return "", annotation
    if typing.get_origin(annotation) is dict:
        _, value = typing.get_args(annotation)
        if isinstance(value, type) and issubclass(value, msgspec.Struct):
            return "<name>", value
    return None


def _type(annotation: Any) -> str:
    if annotation is Secret:
        return "secret string"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation) if a is not type(None)) + " (optional)"
    if origin is typing.Annotated:
        return _type(typing.get_args(annotation)[0])
    if origin is tuple and typing.get_args(annotation)[-1] is Ellipsis:
        return f"list of {_type(typing.get_args(annotation)[0])}"
    if origin is not None:
        args = ", ".join(_type(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation)).replace("PosixPath", "Path")


def _metas(annotation: Any) -> Iterator[msgspec.Meta]:
    """The constraints on ``annotation`` itself, or on what it is when given (``X | None``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        yield from (m for m in annotation.__metadata__ if isinstance(m, msgspec.Meta))
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _metas(arg)


def _bounds(annotation: Any) -> str:
    found = []
    for meta in _metas(annotation):
        for attribute, symbol in _BOUNDS:
            if getattr(meta, attribute) is not None:
                found.append(f"{symbol} {getattr(meta, attribute):,}")
    return ", ".join(found)


def _default(info: msgspec.structs.FieldInfo) -> str:
    if info.default is msgspec.NODEFAULT:
        return "required" if info.default_factory is msgspec.NODEFAULT else "`" + repr(info.default_factory()) + "`"
    value = info.default
    if isinstance(value, Secret):
        return "(secret)"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`"


def fields(model: type[msgspec.Struct] = Config, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, bounds) of every key, sections after the top level's own keys."""
    later = []
    for info in msgspec.structs.fields(model):
        annotation = info.type
        inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
        section = _section_in(inner)
        if section is not None:
            later.append((f"{prefix}{info.name}{'.' + section[0] if section[0] else ''}.", section[1]))
            continue
        yield f"{prefix}{info.name}", _type(annotation), _default(info), _bounds(annotation)
    for deeper, section_model in later:
        yield from fields(section_model, deeper)


def table() -> str:
    lines = ["| key | type | default | refused unless |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | {kind} | {default} | {bounds or '-'} |" for key, kind, default, bounds in fields()]
    return "\n".join(lines)


def limits(prefix: str = "") -> str:
    """The keys with bounds (under ``prefix``: one section's, for the page that describes it)."""
    bounded = [(key, bounds, default) for key, _, default, bounds in fields() if bounds and key.startswith(prefix)]
    lines = ["| key | refused unless | default |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {bounds} | {default} |" for key, bounds, default in bounded]
    return "\n".join(lines)


def rendered(text: str, markers: tuple[str, str], content: str) -> str:
    begin, end = markers
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{content}\n{end}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(rendered(DOC.read_text(), TABLE, table()))
        README.write_text(rendered(README.read_text(), LIMITS, limits()))
        for prefix, page in SECTIONS.items():
            page.write_text(rendered(page.read_text(), LIMITS, limits(prefix)))
    else:
        print(table())
