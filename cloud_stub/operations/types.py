"""What every operation's request and result is made of: pydantic models that refuse what they do not
know (``extra="forbid"``), identifiers and names without control or bidirectional-override characters
(a NUL or U+202E in a site's name would reach every page and log that shows it), and items.

The same models are the HTTP API's request and response bodies, so the OpenAPI description states every
rule a request must meet to be asked at all; what the ledger's rules refuse after that is a
:class:`~cloud_stub.errors.Refused`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Characters never taken in a name or an id: C0 and C1 controls (NUL, ESC...), the soft hyphen, the
# invisible formats (zero-width joiners, bidirectional embeddings and overrides such as U+202E, word
# joiners, the byte order mark), line and paragraph separators, private use and lone surrogates. One
# pattern, used by the validators here and published in the OpenAPI description (Python's and ECMA 262's
# regular expressions read it alike), so a client is told the same rule the server keeps.
_REFUSED: Final = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u2028-\u202e"
    r"\u2060-\u206f\ufeff\ufff9-\ufffb\ue000-\uf8ff"
)  # lone surrogates (not Unicode text at all) are refused apart: JSON Schema engines cannot name them
REFUSED_CHARACTERS: Final = _REFUSED  # for a character class: what no text field takes
TEXT_PATTERN: Final = rf"^[^{_REFUSED}]*$"
IDENT_PATTERN: Final = rf"^[^/ {_REFUSED}](?:[^/{_REFUSED}]*[^/ {_REFUSED}])?$"  # no '/', no space at an end
_TEXT: Final = re.compile(TEXT_PATTERN)
_IDENT: Final = re.compile(IDENT_PATTERN)


def _printable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a lone surrogate is not Unicode text") from None
    if not _TEXT.match(value):
        bad = next(c for c in value if not _TEXT.match(c))
        raise ValueError(f"U+{ord(bad):04X} is not allowed in text (a control or invisible formatting character)")
    return value


def _ident(value: str) -> str:
    _printable(value)
    if not _IDENT.match(value):
        raise ValueError("an id has no '/' and no space at either end")
    return value


Ident = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"pattern": IDENT_PATTERN}),
    AfterValidator(_ident),
]
Text = Annotated[str, Field(max_length=200, json_schema_extra={"pattern": TEXT_PATTERN}), AfterValidator(_printable)]
# Sites, doors, apartments, app accounts and upgrades travel to the devices in signed documents: their ids
# are the wire contract's (PROTOCOL.md "Identifiers"), letters, digits, '_' and '-'. A site's name is
# free text (Text); its id is not.
WIRE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
WireId = Annotated[str, Field(pattern=WIRE_ID_PATTERN, description="letters, digits, '_', '-' (PROTOCOL.md)")]


def refusal(rule: str, seed: str, message: str) -> PydanticCustomError:
    """A field's refusal that is also one of the vendor's rules: its type is the rule's code and its context
    names the seed, so the CLI reports it as the rule it is (and the API as a 400 naming the field)."""
    return PydanticCustomError(rule, message, {"seed": seed})


MAC_PATTERN: Final = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$"
_MAC: Final = re.compile(MAC_PATTERN)


def _mac(value: str) -> str:
    if not _MAC.match(value):
        raise refusal("bad_mac", "DOMAIN.md who is who", "not a MAC address (12 hex digits)")
    return value.replace(":", "").replace("-", "").lower()


Mac = Annotated[
    str,
    Field(max_length=17, json_schema_extra={"pattern": MAC_PATTERN}, description="12 hex digits, ':' or '-' between"),
    AfterValidator(_mac),
]
ITEM_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}/[a-z_]{1,64}/(project|(door|account|apartment):[A-Za-z0-9_-]{1,64})$"
Item = Annotated[str, Field(pattern=ITEM_PATTERN, max_length=200, description="SITE/SERVICE/SUBJECT")]


class Request(BaseModel):
    """A request: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Result(BaseModel):
    """A result: frozen; dumped as JSON by the adapters."""

    model_config = ConfigDict(frozen=True)


def given(name: str) -> dict[str, Any]:
    """JSON Schema: ``name`` is present and not null."""
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def present(*names: str) -> dict[str, Any]:
    """JSON Schema: exactly one of ``names`` is given (present and not null): an either/or rule stated in
    the schema, so that a client generated from it is never refused what the schema allows."""
    return {"oneOf": [given(n) for n in names]}


def not_both(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema: not both conditions (each a :func:`given`-like schema)."""
    return {"not": {"allOf": [first, second]}}


def item_parts(item: str) -> tuple[str, str, str]:
    """``SITE/SERVICE/SUBJECT`` as its three parts."""
    project, service, subject = item.split("/", 2)
    return project, service, subject


def check_text(value: str) -> str:
    """Text from a free-form place (a KEY=VALUE setting) held to the same rule as the models' fields."""
    return _printable(value)
