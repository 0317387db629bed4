"""The HTTP API for the ledger and rollouts (docs/cloud.md "HTTP API"): FastAPI on uvicorn, served by
``smartplus-cloud serve --api-port``.

An adapter: each route resolves who asks (``Authorization: Bearer <token>``, the scheme in any case, RFC
9110), validates the request against the operation's own model, runs the operation and returns its typed
result; it holds no rule and runs no SQL. ``GET /v1/openapi.json`` is the OpenAPI 3.1 description, made by
FastAPI from the routes and the operations' request and result models, with the either/or rules stated in
the schemas (so a client generated from it is not refused what it allows).

Answers: 200 and the result; 400 a malformed request (one line naming the field); 401 no, an unknown, an
expired or a revoked token; 403 ``not_yours``; 404 ``not_found`` or no such route; 405 a method the path
does not take; 409 any other rule (``{"rule", "seed", "message"}``); 413 a body over :data:`MAX_BODY`
(declared or chunked); 415 a body that is not JSON; 422 an ``Idempotency-Key`` used again for another
request; 503 the ledger unavailable (with ``Retry-After``).

Writes take an ``Idempotency-Key`` header (as payment APIs do): the first answer to a key is kept with the
write, in its transaction; the same key from the same account returns that answer (``Idempotent-Replayed:
true``) and does nothing more, for :data:`KEY_HOURS` hours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud_stub.errors import IdempotencyMismatch, LedgerError, Refused
from cloud_stub.ledger import Ledger, UnitOfWork
from cloud_stub.operations import accounts, credits, ingest, paying, remote, sites, upgrades
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import MAC_PATTERN, WIRE_ID_PATTERN, Result

log = structlog.get_logger("cloud_stub.api")
T = TypeVar("T")
MAX_BODY: Final = 1024 * 1024  # above the largest body the schemas allow (2,000 items of at most 200 characters)
KEY_HOURS: Final = 24
KEY_PATTERN: Final = r"^[\x21-\x7e]{1,255}$"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


class Error(BaseModel):
    """A refusal: ``rule`` and ``seed`` when one of the vendor's rules refused it."""

    message: str
    rule: str | None = None
    seed: str | None = None


ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": Error, "description": what}
    for code, what in (
        (400, "a malformed request: the field and what is wrong"),
        (401, "no token, or an unknown, expired or revoked one"),
        (403, "the account does not act for this (not_yours)"),
        (404, "no such thing (not_found)"),
        (409, "refused by a rule: its code and seed"),
        (413, "a body over 1 MiB"),
        (415, "a body that is not application/json"),
        (422, "an Idempotency-Key used before for another request"),
        (503, "the ledger is unavailable: try again"),
    )
}


# -- who asks ---------------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="A token from `smartplus-cloud api-token create ACCOUNT`")


async def _ledger(request: Request) -> Ledger:  # async: no I/O, no trip to the thread pool
    book: Ledger = request.app.state.ledger
    return book


async def _token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The bearer token (the scheme in any case, RFC 9110); whose it is, is read with the request's own work,
    in its transaction (:func:`_who`)."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, "an Authorization: Bearer token of an account is needed",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return credentials.credentials


def _who(uow: UnitOfWork, token: str) -> Actor:
    found = accounts.token_actor(uow, token)
    if found is None:
        raise HTTPException(401, "the token is unknown, expired or revoked", headers={"WWW-Authenticate": "Bearer"})
    return found


def _read(book: Ledger, token: str, work: Callable[[UnitOfWork, Actor], T]) -> T:
    """A read as the token's account: who it is and what it asks, in one transaction."""
    return book.read(lambda uow: work(uow, _who(uow, token)))


Caller = Annotated[str, Depends(_token)]
Book = Annotated[Ledger, Depends(_ledger)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=KEY_PATTERN,
           description="Any printable text of yours: the same key again returns the first answer, once done"),
]  # fmt: skip
SiteId = Annotated[str, Path(pattern=WIRE_ID_PATTERN, description="the site's id")]
UpgradeId = Annotated[str, Path(pattern=WIRE_ID_PATTERN, description="the upgrade's id")]


# -- writes: once per Idempotency-Key -----------------------------------------------------------------------
async def _fingerprint(request: Request) -> str:
    body = await request.body()
    return hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + body).hexdigest()


Fingerprint = Annotated[str, Depends(_fingerprint)]


def _write(
    book: Ledger, token: str, key: str | None, fingerprint: str, work: Callable[[UnitOfWork, Actor], Any]
) -> Any:
    """A write as the token's account, in one transaction; with a key, its answer kept with it (or the answer
    the first request with that key had)."""
    if key is None:
        return book.run(lambda uow: work(uow, _who(uow, token)))

    def once(uow: UnitOfWork) -> Any:
        actor = _who(uow, token)
        known = uow.requests.claim(actor.id, key, fingerprint, uow.now)
        if known is not None:
            if known.fingerprint != fingerprint:
                raise IdempotencyMismatch(f"Idempotency-Key {key!r} was used for another request")
            return JSONResponse(json.loads(known.body or "null"), status_code=known.status or 200,
                                headers={"Idempotent-Replayed": "true"})  # fmt: skip
        result = jsonable_encoder(work(uow, actor))
        uow.requests.answer(actor.id, key, 200, json.dumps(result))
        return JSONResponse(result)

    try:
        return book.run(once)
    except Refused as refused:  # refused writes change nothing; the refusal is the key's answer all the same
        status, body = _refusal(refused)
        book.run(lambda uow: _keep_refusal(uow, _who(uow, token), key, fingerprint, status, body))
        raise


def _keep_refusal(uow: UnitOfWork, actor: Actor, key: str, fingerprint: str, status: int, body: Error) -> None:
    if uow.requests.claim(actor.id, key, fingerprint, uow.now) is None:
        uow.requests.answer(actor.id, key, status, body.model_dump_json(exclude_none=True))


def _refusal(refused: Refused) -> tuple[int, Error]:
    status = {"not_yours": 403, "not_found": 404}.get(refused.rule, 409)
    return status, Error(rule=refused.rule, seed=refused.seed, message=str(refused))


# -- routes ------------------------------------------------------------------------------------------------
router = APIRouter(prefix="/v1", responses=ERRORS)


class Done(Result):
    """What a write did, in a word."""

    done: str


@router.get("/sites", summary="The sites the account acts for")
def list_sites(book: Book, caller: Caller) -> list[sites.SiteSummary]:
    return _read(book, caller, lambda uow, actor: sites.sites(uow, actor))


@router.post("/sites", summary="A new site (an installer's own)", response_model=sites.SiteView)
def add_site(
    body: sites.AddSite, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: sites.add_site(uow, actor, body))


@router.get("/sites/{project}", summary="A site and its settings")
def get_site(project: SiteId, book: Book, caller: Caller) -> sites.SiteView:
    return _read(book, caller, lambda uow, actor: sites.get_site(uow, actor, project))


@router.patch(
    "/sites/{project}", summary="Edit a site and the settings that reach its devices", response_model=sites.SiteView
)
def edit_site(
    project: SiteId, body: sites.SiteChanges, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = sites.EditSite(project=project, changes=body.changes)
    return _write(book, caller, key, fingerprint, lambda uow, actor: sites.edit_site(uow, actor, asked))


@router.delete(
    "/sites/{project}", summary="Delete a site (its devices go back to the library)", response_model=sites.Deleted
)
def delete_site(
    project: SiteId, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    asked = sites.DeleteSite(project=project)
    return _write(book, caller, key, fingerprint, lambda uow, actor: sites.delete_site(uow, actor, asked))


@router.get("/sites/{project}/services", summary="A site's services and their expiry")
def site_services(project: SiteId, book: Book, caller: Caller) -> list[sites.HoldingView]:
    return _read(book, caller, lambda uow, actor: sites.services(uow, actor, project))


@router.get("/sites/{project}/apartments", summary="A community's apartments and their services")
def site_apartments(project: SiteId, book: Book, caller: Caller) -> list[sites.ApartmentView]:
    return _read(book, caller, lambda uow, actor: sites.apartments(uow, actor, project))


@router.post("/sites/{project}/apartments", summary="Add an apartment to a community", response_model=Done)
def add_apartment(
    project: SiteId, body: sites.ApartmentFields, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = sites.AddApartment(project=project, **body.model_dump())
    return _write(book, caller, key, fingerprint, lambda uow, actor: Done(done=sites.add_apartment(uow, actor, asked)))


class AccountAdded(Result):
    account: str
    service: str  # the service that pays for it


@router.post(
    "/sites/{project}/app-accounts",
    summary="Add an app account (and the service that pays for it)",
    response_model=AccountAdded,
)
def add_app_account(
    project: SiteId, body: sites.AppAccountFields, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = sites.AddAppAccount(project=project, **body.model_dump())
    return _write(
        book, caller, key, fingerprint,
        lambda uow, actor: AccountAdded(account=asked.id, service=sites.add_app_account(uow, actor, asked)),
    )  # fmt: skip


@router.get("/sites/{project}/devices", summary="A site's devices")
def site_devices(project: SiteId, book: Book, caller: Caller) -> list[sites.DeviceView]:
    return _read(book, caller, lambda uow, actor: sites.site_devices(uow, actor, project))


@router.post(
    "/sites/{project}/devices", summary="Put a device of the distributor's library in the site", response_model=Done
)
def add_device(
    project: SiteId, body: sites.DeviceFields, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = sites.AddDevice(project=project, **body.model_dump())
    return _write(book, caller, key, fingerprint, lambda uow, actor: Done(done=sites.add_device(uow, actor, asked)))


@router.post("/sites/{project}/switch", summary="Switch a community's service on or off", response_model=sites.Switched)
def switch(
    project: SiteId, body: sites.SwitchFields, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = sites.Switch(project=project, **body.model_dump())
    return _write(book, caller, key, fingerprint, lambda uow, actor: sites.switch(uow, actor, asked))


@router.get("/sites/{project}/notices", summary="The renewal and expiry notices of a site")
def site_notices(project: SiteId, book: Book, caller: Caller) -> list[paying.NoticeView]:
    return _read(book, caller, lambda uow, actor: paying.notices_of(uow, actor, project))


@router.get("/sites/{project}/alarms", summary="Alarms and call alerts the site's devices reported")
def site_alarms(project: SiteId, book: Book, caller: Caller) -> list[dict[str, Any]]:
    return _read(book, caller, lambda uow, actor: ingest.alarms(uow, actor, project))


@router.post("/quotes", summary="The price first: what paying for the selection costs")
def quote(body: paying.Selection, book: Book, caller: Caller) -> paying.Quote:
    return _read(book, caller, lambda uow, actor: paying.quote(uow, actor, body))


@router.post(
    "/orders", summary="A pending order for the selection: its transaction number", response_model=paying.Placed
)
def place_order(
    body: paying.PlaceOrder, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: paying.place(uow, actor, body))


@router.post("/orders/{txn}/pay", summary="Pay a pending order within 15 minutes", response_model=paying.Paid)
def pay(
    txn: Annotated[str, Path(pattern=r"^[0-9]{17}$")], body: paying.PayOptions, book: Book, caller: Caller,
    fingerprint: Fingerprint, key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = paying.Pay(txn=txn, auto_renew=body.auto_renew)
    return _write(book, caller, key, fingerprint, lambda uow, actor: paying.pay(uow, actor, asked))


@router.get("/payments", summary="The account's payment records, newest first")
def list_payments(book: Book, caller: Caller) -> list[paying.PaymentRecord]:
    return _read(book, caller, lambda uow, actor: paying.payments(uow, actor))


@router.post("/auto-renew/cancel", summary="Stop auto-renewing these items", response_model=paying.Cancelled)
def cancel_auto_renew(
    body: paying.CancelAutoRenew, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: paying.cancel_auto_renew(uow, actor, body))


@router.get("/credits", summary="Available, total and used credit, and each movement")
def credit_log(book: Book, caller: Caller) -> credits.CreditLog:
    return _read(book, caller, lambda uow, actor: credits.credit_log(uow, actor, credits.CreditLogQuery()))


@router.post("/credits/allocate", summary="Give credits to an account under this one", response_model=credits.Allocated)
def allocate(
    body: credits.Allocate, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: credits.allocate(uow, actor, body))


@router.get("/firmware", summary="The firmware list")
def firmware(book: Book, caller: Caller) -> list[upgrades.FirmwareView]:
    return _read(book, caller, lambda uow, actor: upgrades.firmware_list(uow, actor))


@router.get("/upgrades", summary="Upgrades of the account's sites, newest first")
def list_upgrades(
    book: Book, caller: Caller, project: Annotated[str | None, Query(pattern=WIRE_ID_PATTERN)] = None,
    status: Literal["Pending", "Processing", "Executed"] | None = None,
) -> list[upgrades.UpgradeView]:  # fmt: skip
    asked = upgrades.UpgradeQuery(project=project, status=status)
    return _read(book, caller, lambda uow, actor: upgrades.upgrades(uow, actor, asked))


@router.post("/upgrades", summary="Stage an upgrade, at once or phased; the devices it names", response_model=list[str])
def stage_upgrade(
    body: upgrades.StageUpgrade, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: upgrades.stage(uow, actor, body))


@router.patch(
    "/upgrades/{ident}",
    summary="Edit an upgrade no device has started: its time or version",
    response_model=upgrades.UpgradeView,
)
def edit_upgrade(
    ident: UpgradeId, body: upgrades.UpgradeChanges, book: Book, caller: Caller, fingerprint: Fingerprint,
    key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = upgrades.EditUpgrade(id=ident, **body.model_dump())
    return _write(book, caller, key, fingerprint, lambda uow, actor: upgrades.edit(uow, actor, asked))


@router.delete("/upgrades/{ident}", summary="Delete an upgrade no device has started", response_model=Done)
def delete_upgrade(
    ident: UpgradeId, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: Done(done=upgrades.delete(uow, actor, ident)))


@router.get("/upgrades/{ident}/rollout", summary="A phased rollout's state and waves")
def rollout(ident: UpgradeId, book: Book, caller: Caller) -> upgrades.RolloutView:
    return _read(book, caller, lambda uow, actor: upgrades.rollout(uow, actor, ident))


@router.post("/upgrades/{ident}/rollout/resume", summary="Resume a paused rollout", response_model=upgrades.RolloutView)
def resume_rollout(
    ident: UpgradeId, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: upgrades.resume(uow, actor, ident))


@router.post("/upgrades/{ident}/rollout/cancel", summary="Cancel a rollout", response_model=upgrades.RolloutView)
def cancel_rollout(
    ident: UpgradeId, book: Book, caller: Caller, fingerprint: Fingerprint, key: IdempotencyKey = None
) -> Any:
    return _write(book, caller, key, fingerprint, lambda uow, actor: upgrades.cancel(uow, actor, ident))


class Asked(Result):
    id: str  # the command's id: GET /v1/commands/{id} shows the device's reply once it came


@router.post(
    "/devices/{mac}/{op}", summary="Reboot a device, or ask it to report its state again", response_model=Asked
)
def ask_device(
    mac: Annotated[str, Path(pattern=MAC_PATTERN)], op: Literal["reboot", "resync"], book: Book, caller: Caller,
    fingerprint: Fingerprint, key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    asked = remote.AskDevice(mac=mac, op=op)
    return _write(book, caller, key, fingerprint, lambda uow, actor: Asked(id=remote.ask(uow, actor, asked)))


class Reply(Result):
    id: str
    reply: dict[str, Any] | None  # None until the device answered


@router.get("/commands/{ident}", summary="A device's reply to a command")
def command_reply(ident: Annotated[str, Path(pattern=r"^cmd-[0-9a-f]{12}$")], book: Book, caller: Caller) -> Reply:
    return Reply(id=ident, reply=_read(book, caller, lambda uow, actor: remote.reply(uow, actor, ident)))


# -- the application ---------------------------------------------------------------------------------------
def app(book: Ledger) -> _BodyRules:
    """The API over ``book``, as an ASGI application."""
    api = FastAPI(
        title="SmartPlus cloud: ledger and rollouts",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        description=(__doc__ or "").split("\n\n", 1)[1],
    )
    api.state.ledger = book
    api.include_router(router)
    api.add_exception_handler(Refused, _on_refused)  # type: ignore[arg-type]
    api.add_exception_handler(RequestValidationError, _on_invalid)  # type: ignore[arg-type]
    api.add_exception_handler(IdempotencyMismatch, _on_mismatch)  # type: ignore[arg-type]
    api.add_exception_handler(LedgerError, _on_unavailable)  # type: ignore[arg-type]
    api.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    return _BodyRules(api)


def _json(status: int, error: Error, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.model_dump(exclude_none=True), status_code=status, headers=headers)


async def _on_refused(_request: Request, refused: Refused) -> JSONResponse:
    return _json(*_refusal(refused))


async def _on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    seed = (first.get("ctx") or {}).get("seed")
    rule = first["type"] if seed else None
    return _json(400, Error(message=f"{where}: {message}", rule=rule, seed=str(seed) if seed else None))


async def _on_mismatch(_request: Request, exc: IdempotencyMismatch) -> JSONResponse:
    return _json(422, Error(message=str(exc)))


async def _on_unavailable(_request: Request, exc: LedgerError) -> JSONResponse:
    log.warning("api_ledger_unavailable", error=str(exc)[:200])
    return _json(503, Error(message="the ledger is unavailable: try again"), {"Retry-After": "1"})


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method the path takes (Starlette names only the first route's)
        headers["Allow"] = ", ".join(sorted(_methods(request)))
    return _json(exc.status_code, Error(message=str(exc.detail)), headers)


def _methods(request: Request) -> set[str]:
    from starlette.routing import Match

    found: set[str] = set()
    for route in router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            found |= route.methods or set()
    return found


class _BodyRules:
    """Bodies are JSON and at most :data:`MAX_BODY` bytes, however they are sent (a Content-Length or
    chunked): 415 and 413 before any route sees them."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (declared is not None and declared != "0")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if has_body and kind != "application/json":
            await _json(415, Error(message="a body is JSON: Content-Type: application/json"))(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            await _json(413, Error(message=f"a body is at most {MAX_BODY} bytes"))(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise HTTPException(413, f"a body is at most {MAX_BODY} bytes")
            return message

        await self.app(scope, bounded, send)
