"""An HTTP API for the ledger and rollouts (docs/cloud.md "HTTP API"), served by ``smartplus-cloud serve``.

JSON over HTTP/1.1, one route table: each route names its method, path, request model (pydantic,
strict, unknown fields refused) and the function it runs, the same ledger and rollout functions the
CLI runs, so the rules and refusals are the same. ``GET /v1/openapi.json`` is the OpenAPI 3.1
description generated from that table and the models' JSON schemas.

Authentication per account: ``Authorization: Bearer <token>``; a token is made by the platform
operator (``smartplus-cloud api-token ACCOUNT``), shown once, kept as its SHA-256. The account it
belongs to is who acts (as ``--as`` does). Answers: 200 with the result; 400 a malformed request (one
line naming what is wrong); 401 no or an unknown token; 403 ``not_yours``; 404 ``not_found`` or no
such route; 409 any other rule's refusal (``{"rule", "seed", "message"}``). Bodies are bounded
(:data:`MAX_BODY`), requests time out, and each is answered in the event loop, one at a time (the
ledger's work is milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, NamedTuple

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_stub import rollouts, waves
from cloud_stub.ledger import Ledger
from cloud_stub.rules import Refused

log = structlog.get_logger("cloud_stub.api")

MAX_BODY: Final = 64 * 1024
MAX_HEAD: Final = 16 * 1024
TIMEOUT: Final = 10.0


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


Item = Annotated[str, Field(pattern=r"^[^/]+/[^/]+/.+$", description="PROJECT/SERVICE/SUBJECT")]


class Selection(_Body):
    """What to pay for: ``items``, or what ``sites`` could pay for (``services`` narrows it); for
    ``months`` (regular payment) or to ``renew_to`` (credit payment, YYYY-MM-DD)."""

    items: list[Item] = []
    sites: list[str] = []
    services: list[str] = []
    months: Annotated[int, Field(ge=1, le=120)] | None = None
    renew_to: date | None = None
    plan: Literal["0-200", "201+"] | None = None


class OrderBody(Selection):
    source: Literal["stripe", "paypal", "coupon", "credit"]


class PayBody(_Body):
    auto_renew: bool = False


class UpgradeBody(_Body):
    """An upgrade of a site's devices of one model: all at once, or phased (``wave_size`` or ``wave_percent``)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    project: str
    model: str
    version: str
    devices: list[str] | None = None
    at: datetime | None = None
    reset: bool = False
    wave_size: Annotated[int, Field(ge=1)] | None = None
    wave_percent: Annotated[float, Field(gt=0, le=100)] | None = None
    wave_wait: Annotated[float, Field(ge=0)] = 0.0
    max_failures: Annotated[float, Field(ge=0, lt=1)] = 0.2


class AllocateBody(_Body):
    account: str
    amount: Annotated[int, Field(ge=1)]


class SiteChanges(_Body):
    """Any of: name, timezone, pm, pay_by_pm, pm_notices, renew_notices, and the device settings."""

    changes: dict[str, str | bool | int]


class ApartmentBody(_Body):
    id: str
    name: str = ""
    device_mac: str | None = None
    device_name: str | None = None
    services: dict[Literal["with_indoor_monitor", "landline", "video_storage"], bool] = {}


class AppAccountBody(_Body):
    id: str
    role: Literal["master", "family", "pm", "personnel", "admin"]
    name: str = ""
    apartment: str | None = None


class DeviceBody(_Body):
    mac: str
    distributor: str
    model: str
    name: str | None = None


class SwitchBody(_Body):
    service: str
    on: bool
    apartment: str | None = None
    all_apartments: bool = False


class ItemsBody(_Body):
    items: Annotated[list[Item], Field(min_length=1)]


class Call(NamedTuple):
    """What a handler gets: the ledger, who acts, the path's parameters, the query, the body, the time."""

    book: Ledger
    who: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    now: float


class Route(NamedTuple):
    method: str
    path: str  # with {name} parameters
    summary: str
    body: type[BaseModel] | None
    handler: Callable[[Call], Any]


def _selection(call: Call, chosen: Selection) -> dict[str, Any]:
    if bool(chosen.items) == bool(chosen.sites):
        raise _BadRequest("give items, or sites (with services to narrow them)")
    if (chosen.months is None) == (chosen.renew_to is None):
        raise _BadRequest("give months (regular payment) or renew_to (credit payment)")
    items = (
        [tuple(item.split("/", 2)) for item in chosen.items]
        if chosen.items
        else call.book.select(chosen.sites, chosen.services or None)
    )
    length: dict[str, Any] = {"months": chosen.months} if chosen.months is not None else {"renew_to": chosen.renew_to}
    quoted: dict[str, Any] = call.book.quote(call.who, items, call.now, plan=chosen.plan, **length)  # type: ignore[arg-type]
    return quoted


def _order(call: Call) -> dict[str, Any]:
    offer = _selection(call, call.body)
    ident = call.book.order(call.who, offer, call.body.source, call.now)
    return {"txn": call.book.txn_of(ident), "status": "pending", "amount": offer["amount"],
            "pay_by": call.now + 15 * 60, "quote": offer}  # fmt: skip


def _pay(call: Call) -> dict[str, Any]:
    order = call.book.order_of(call.params["txn"])
    return call.book.pay(order, call.now, auto_renew=call.body.auto_renew, payer=call.who)


def _mine(call: Call, ident: str) -> None:
    call.book.check_authority(call.who, call.book.project(rollouts.project_of(call.book, ident)))


def _upgrades(call: Call) -> Any:
    mine = [s["id"] for s in call.book.sites(call.who)]
    project = call.query.get("project")
    if project is not None:
        call.book.check_authority(call.who, call.book.project(project))
    status = call.query.get("status")
    if status not in (None, "Pending", "Processing", "Executed"):
        raise _BadRequest("status is Pending, Processing or Executed")
    return rollouts.upgrades(call.book, [project] if project else mine, status)


def _add_upgrade(call: Call) -> Any:
    b: UpgradeBody = call.body
    call.book.check_authority(call.who, call.book.project(b.project))
    if b.wave_size is not None and b.wave_percent is not None:
        raise _BadRequest("wave_size or wave_percent, not both")
    phased = None
    if b.wave_size is not None or b.wave_percent is not None:
        phased = waves.Plan(b.wave_size, b.wave_percent, b.wave_wait, b.max_failures)
    if b.at is not None and b.at.tzinfo is None:
        raise _BadRequest("at needs its time zone")
    at = None if b.at is None else b.at.timestamp()
    return rollouts.add_upgrade(call.book, b.id, b.project, b.model, b.version, call.now, devices=b.devices,
                                at=at, reset=b.reset, phased=phased)  # fmt: skip


def _delete_upgrade(call: Call) -> Any:
    _mine(call, call.params["id"])
    rollouts.delete_upgrade(call.book, call.params["id"])
    return {"deleted": call.params["id"]}


def _rollout(action: Callable[[Ledger, str], None] | None) -> Callable[[Call], Any]:
    def handler(call: Call) -> Any:
        _mine(call, call.params["id"])
        if action is not None:
            action(call.book, call.params["id"])
        return rollouts.rollout_status(call.book, call.params["id"])

    return handler


def _site(call: Call) -> str:
    """The path's site, which the account must act for (reads too: the API serves many tenants)."""
    project = call.params["project"]
    call.book.check_authority(call.who, call.book.project(project))
    return project


def _apartment(call: Call) -> Any:
    b: ApartmentBody = call.body
    if (b.device_mac is None) != (b.device_name is None):
        raise _BadRequest("device_mac and device_name go together")
    device = (b.device_mac, b.device_name) if b.device_mac and b.device_name else None
    call.book.add_apartment(call.params["project"], b.id, b.name or b.id, actor=call.who, device=device,
                            services={str(k): v for k, v in b.services.items()})  # fmt: skip
    return {"apartment": b.id}


def _switch(call: Call) -> Any:
    b: SwitchBody = call.body
    if b.apartment and b.all_apartments:
        raise _BadRequest("apartment or all_apartments, not both")
    subject = "apartments" if b.all_apartments else f"apartment:{b.apartment}" if b.apartment else "project"
    changed = call.book.switch(call.params["project"], b.service, subject, on=b.on, actor=call.who, now=call.now)
    return {"service": b.service, "on": b.on, "changed": changed}


ROUTES: Final = (
    Route("GET", "/v1/sites", "The sites the account acts for", None, lambda c: c.book.sites(c.who)),
    Route("POST", "/v1/quotes", "The price first: what paying for the selection costs", Selection,
          lambda c: _selection(c, c.body)),
    Route("POST", "/v1/orders", "A pending order for the selection: its transaction number", OrderBody, _order),
    Route("POST", "/v1/orders/{txn}/pay", "Pay a pending order within 15 minutes", PayBody, _pay),
    Route("GET", "/v1/payments", "The account's payment records", None, lambda c: c.book.payments(c.who)),
    Route("GET", "/v1/upgrades", "Upgrades (query: project, status)", None, _upgrades),
    Route("POST", "/v1/upgrades", "Stage an upgrade, at once or phased", UpgradeBody, _add_upgrade),
    Route("DELETE", "/v1/upgrades/{id}", "Delete an upgrade no device has started", None, _delete_upgrade),
    Route("GET", "/v1/upgrades/{id}/rollout", "A phased rollout's state and waves", None, _rollout(None)),
    Route("POST", "/v1/upgrades/{id}/rollout/resume", "Resume a paused rollout", None,
          _rollout(rollouts.resume_rollout)),
    Route("POST", "/v1/upgrades/{id}/rollout/cancel", "Cancel a rollout", None, _rollout(rollouts.cancel_rollout)),
    Route("GET", "/v1/credits", "Available, total and used credit, and each movement", None,
          lambda c: {**c.book.credit_totals(c.who), "log": c.book.credit_log(c.who)}),
    Route("POST", "/v1/credits/allocate", "Give credits to an account under this one", AllocateBody,
          lambda c: {"remaining": c.book.allocate(c.who, c.body.account, c.body.amount, c.now)}),
    Route("PATCH", "/v1/sites/{project}", "Edit a site and the settings that reach its devices", SiteChanges,
          lambda c: c.book.set_site(c.who, c.params["project"], dict(c.body.changes))),
    Route("DELETE", "/v1/sites/{project}", "Delete a site (its devices go back to the library)", None,
          lambda c: c.book.delete_site(c.who, c.params["project"])),
    Route("GET", "/v1/sites/{project}/services", "A site's services and their expiry", None,
          lambda c: c.book.services(_site(c))),
    Route("GET", "/v1/sites/{project}/apartments", "A community's apartments and their services", None,
          lambda c: c.book.apartments(_site(c))),
    Route("POST", "/v1/sites/{project}/apartments", "Add an apartment to a community", ApartmentBody, _apartment),
    Route("POST", "/v1/sites/{project}/app-accounts", "Add an app account (the service that pays for it)",
          AppAccountBody, lambda c: c.book.add_app_account(c.params["project"], c.body.id, c.body.role,
                                                            c.body.name or c.body.id, c.body.apartment, actor=c.who)),
    Route("POST", "/v1/sites/{project}/devices", "Put a device of the distributor's library in the site", DeviceBody,
          lambda c: c.book.add_device(c.body.mac, c.body.distributor, c.body.model, c.params["project"], actor=c.who,
                                      name=c.body.name)),
    Route("POST", "/v1/sites/{project}/switch", "Switch a community's service on or off", SwitchBody, _switch),
    Route("POST", "/v1/auto-renew/cancel", "Stop auto-renewing these items", ItemsBody,
          lambda c: {"cancelled": c.book.cancel_auto_renew(c.who, [tuple(i.split("/", 2)) for i in c.body.items])}),
)  # fmt: skip


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description, from :data:`ROUTES` and the request models."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    error = {
        "description": "refused",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "the result", "content": {"application/json": {"schema": {}}}},
                "400": error, "401": error, "403": error, "404": error, "409": error,
            },
        }  # fmt: skip
        names = re.findall(r"{(\w+)}", route.path)
        if names:
            operation["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                       for n in names]  # fmt: skip
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[route.body.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    schemas["Error"] = {
        "type": "object",
        "properties": {"rule": {"type": "string"}, "seed": {"type": "string"}, "message": {"type": "string"}},
        "required": ["message"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "SmartPlus cloud stub: ledger and rollouts", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


class _BadRequest(Exception):
    pass


def make_token(book: Ledger, account: str, now: float) -> str:
    """A new API token for ``account`` (shown once; the ledger keeps its SHA-256)."""
    book.account(account)  # refuses an unknown account
    token = secrets.token_urlsafe(32)
    with book.transaction() as db:
        db.execute(
            "INSERT INTO api_tokens (digest, account, created) VALUES (?, ?, ?)",
            (hashlib.sha256(token.encode()).hexdigest(), account, now),
        )
    return token


def _account_of(book: Ledger, header: str | None) -> str | None:
    if header is None or not header.startswith("Bearer "):
        return None
    digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    row = book.db.execute("SELECT account FROM api_tokens WHERE digest = ?", (digest,)).fetchone()
    return None if row is None else str(row[0])


def _match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        pattern = "^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", route.path) + "$"
        if route.method == method and (found := re.match(pattern, path)):
            return route, found.groupdict()
    return None


class Api:
    """The API over one ledger; :meth:`start` serves it on ``host``:``port`` (0: any free port)."""

    def __init__(self, book: Ledger, clock: Callable[[], float]) -> None:
        self.book, self.clock = book, clock
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Api:
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("api_serving", host=host, port=self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, method: str, target: str, authorization: str | None, body: bytes) -> tuple[int, Any]:
        """(status, JSON) for one request: the whole of the API but the sockets."""
        path, _, query_text = target.partition("?")
        if method == "GET" and path == "/v1/openapi.json":
            return 200, openapi()
        matched = _match(method, path)
        if matched is None:
            return 404, {"message": f"no route {method} {path}"}
        route, params = matched
        who = _account_of(self.book, authorization)
        if who is None:
            return 401, {"message": "an Authorization: Bearer token of an account is needed"}
        query = dict(p.split("=", 1) for p in query_text.split("&") if "=" in p)
        try:
            parsed = None
            if route.body is not None:
                parsed = route.body.model_validate_json(body or b"{}")
            return 200, route.handler(Call(self.book, who, params, query, parsed, self.clock()))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return 400, {"message": f"{where}: {first['msg']}"}
        except _BadRequest as exc:
            return 400, {"message": str(exc)}
        except Refused as refused:
            status = 403 if refused.rule == "not_yours" else 404 if refused.rule == "not_found" else 409
            return status, {"rule": refused.rule, "seed": refused.seed, "message": str(refused)}
        except ValueError as exc:
            return 400, {"message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, result = 400, {"message": "malformed request"}
        try:
            async with asyncio.timeout(TIMEOUT):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request, *lines = head.split("\r\n")
                method, target, _ = request.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                length = int(headers.get("content-length", "0"))
                if not 0 <= length <= MAX_BODY:
                    status, result = 413, {"message": f"a body is at most {MAX_BODY} bytes"}
                else:
                    body = await reader.readexactly(length) if length else b""
                    # In the event loop: the ledger's connection is this thread's, and its work is milliseconds.
                    status, result = self.answer(method, target, headers.get("authorization"), body)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass
        except Exception as exc:  # a defect: a 500 for this request, never the end of the server
            log.exception("api_failed", error=repr(exc)[:200])
            status, result = 500, {"message": "internal error"}
        payload = json.dumps(result, default=str).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error"}[status]  # fmt: skip
        with contextlib.suppress(ConnectionError):
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
