"""The HTTP API for the ledger and rollouts (cloud_stub/api.py) over real HTTP (uvicorn): its OpenAPI
description, per-account tokens, and the same rules and refusals as the CLI; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from cloud_stub import api as http_api
from cloud_stub.http import Served
from tests.support.documents import DEVICE_ID
from tests.support.ledger import DOOR2, LedgerAt, cloud, setup_ledger


class Client:
    """http.client against the API (in a thread: a real socket, a real HTTP parser)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _call(self, method: str, path: str, token: str | None, body: bytes | None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        return response.status, answer

    async def __call__(
        self, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        return await asyncio.to_thread(self._call, method, path, token, data)


API = tuple[Client, dict[str, str], LedgerAt]


@pytest.fixture
async def api(ledger_at: LedgerAt, tmp_path: Path) -> AsyncIterator[tuple[Client, dict[str, str], LedgerAt]]:
    ledger = ledger_at
    setup_ledger(ledger)
    assert cloud(ledger, "add-account", "i2", "--role", "installer", "--name", "J", "--parent", "d1")[0] == 0
    image = tmp_path / "r29.bin"
    image.write_bytes(os.urandom(1000))
    assert cloud(ledger, "add-firmware", "R29", "29.30.10.1", str(image))[0] == 0
    tokens = {}
    for account in ("i1", "i2"):
        code, out = cloud(ledger, "api-token", "create", account)
        assert code == 0
        tokens[account] = out["result"]["token"]
    assert cloud(ledger, "api-token", "create", "nobody")[0] != 0
    book = ledger.open()
    server = await Served(http_api.app(book)).start()
    try:
        yield Client(server.port), tokens, ledger
    finally:
        await server.stop()
        book.close()


async def test_the_openapi_description_is_generated_from_the_routes(api: API) -> None:
    client, _, _ = api
    status, document = await client("GET", "/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    routes = {(m, r.path) for r in http_api.router.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    assert listed == routes
    upgrade = document["components"]["schemas"]["StageUpgrade"]
    assert {"id", "project", "model", "version", "wave_size", "max_failures"} <= set(upgrade["properties"])
    assert "not" in upgrade  # wave_size or wave_percent, not both: in the schema, not only in the server
    assert document["paths"]["/v1/upgrades"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StageUpgrade"
    }
    ok = document["paths"]["/v1/orders"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Placed"}  # responses are described too
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_a_token_names_the_account_and_nothing_works_without_one(api: API) -> None:
    client, tokens, _ = api
    assert (await client("GET", "/v1/sites"))[0] == 401
    assert (await client("GET", "/v1/sites", "not-a-token"))[0] == 401
    status, sites = await client("GET", "/v1/sites", tokens["i1"])
    assert status == 200
    assert [s["id"] for s in sites] == ["office"]
    assert (await client("GET", "/v1/sites", tokens["i2"]))[1] == []
    assert (await client("GET", "/v1/nothing", tokens["i1"]))[0] == 404


async def test_orders_and_payments_follow_the_ledgers_rules(api: API) -> None:
    """Quote, order and pay over HTTP as with the CLI; an installer without permission gets the CLI's
    refusal, a malformed or oversized request is a 400 or 413 naming what is wrong."""
    client, tokens, ledger = api
    selection = {"items": [DOOR2], "renew_to": "2027-01-31"}
    status, quote = await client("POST", "/v1/quotes", tokens["i1"], selection)
    assert status == 200
    assert quote["amount"] > 0
    status, order = await client("POST", "/v1/orders", tokens["i1"], {**selection, "source": "credit"})
    assert (status, order["status"], len(order["txn"])) == (200, "pending", 17)
    assert (await client("POST", f"/v1/orders/{order['txn']}/pay", tokens["i1"], {}))[0] == 200
    status, records = await client("GET", "/v1/payments", tokens["i1"])
    assert [(r["txn"], r["status"]) for r in records][:1] == [(order["txn"], "paid")]
    assert (await client("POST", f"/v1/orders/{order['txn']}/pay", tokens["i1"], {}))[0] == 409  # paid already
    status, refused = await client("POST", "/v1/quotes", tokens["i2"], selection)
    cli_rule = cloud(ledger, "quote", "--item", DOOR2, "--renew-to", "2027-01-31", actor="i2")[1]["rule"]
    assert (status, refused["rule"]) == (409, cli_rule) == (409, "no_permission")  # the CLI's own answer
    status, bad = await client("POST", "/v1/quotes", tokens["i1"], {**selection, "colour": "red"})
    assert status == 400
    assert "colour" in bad["message"]
    assert (await client("POST", "/v1/quotes", tokens["i1"], raw=b"{not json"))[0] == 400
    assert (await client("POST", "/v1/quotes", tokens["i1"], {"items": [DOOR2]}))[0] == 400  # no length
    assert (await client("POST", "/v1/quotes", tokens["i1"], raw=b"x" * (1025 * 1024)))[0] == 413
    assert (await client("POST", "/v1/orders/00000000000000000/pay", tokens["i1"], {}))[0] == 404


async def test_a_phased_rollout_over_http(api: API) -> None:
    client, tokens, _ = api
    body = {"id": "u-h", "project": "office", "model": "R29", "version": "29.30.10.1", "wave_size": 1,
            "max_failures": 0.5}  # fmt: skip
    assert (await client("POST", "/v1/upgrades", tokens["i2"], body))[1]["rule"] == "not_yours"
    assert await client("POST", "/v1/upgrades", tokens["i1"], body) == (200, [DEVICE_ID])
    status, rollout = await client("GET", "/v1/upgrades/u-h/rollout", tokens["i1"])
    assert (status, rollout["state"], rollout["released"]) == (200, "running", 1)
    assert (await client("GET", "/v1/upgrades/u-h/rollout", tokens["i2"]))[0] == 403
    status, refused = await client("POST", "/v1/upgrades/u-h/rollout/resume", tokens["i1"])
    assert (status, refused["rule"]) == (409, "not_paused")
    status, cancelled = await client("POST", "/v1/upgrades/u-h/rollout/cancel", tokens["i1"])
    assert (status, cancelled["state"]) == (200, "cancelled")
    status, listed = await client("GET", "/v1/upgrades?project=office", tokens["i1"])
    assert [u["id"] for u in listed] == ["u-h"]
    both = {**body, "id": "u-x", "wave_percent": 10.0}
    assert (await client("POST", "/v1/upgrades", tokens["i1"], both))[0] == 400
    status, zoneless = await client("POST", "/v1/upgrades", tokens["i1"], {**body, "id": "u-z",
                                                                           "at": "2027-01-31T09:00:00"})  # fmt: skip
    assert (status, "timezone" in zoneless["message"]) == (400, True), zoneless  # when, in which zone?
    assert (await client("GET", "/v1/upgrades/none/rollout", tokens["i1"]))[0] == 404


async def test_sites_credits_and_devices_over_http(api: API) -> None:
    """The rest of the ledger's routes give the CLI's answers: credits, a site's settings and services
    (a site's reads need authority over it), devices from the library, apartments only in communities."""
    client, tokens, ledger = api
    status, credits = await client("GET", "/v1/credits", tokens["i1"])
    assert (status, credits["available"]) == (200, 60)
    changes = {"changes": {"timezone": "Asia/Shanghai"}}
    assert (await client("PATCH", "/v1/sites/office", tokens["i1"], changes))[0] == 200
    assert cloud(ledger, "sites", actor="i1")[1]["result"][0]["timezone"] == "Asia/Shanghai"
    bad = await client("PATCH", "/v1/sites/office", tokens["i1"], {"changes": {"timezone": "Mars/Olympus"}})
    cli = cloud(ledger, "site-set", "office", "timezone=Mars/Olympus", actor="i1")[1]
    assert bad[1]["rule"] == cli["rule"]
    assert (await client("GET", "/v1/sites/office/services", tokens["i1"]))[0] == 200
    assert (await client("GET", "/v1/sites/office/services", tokens["i2"]))[0] == 403
    assert cloud(ledger, "add-device", "0c1105aabbcc", "--distributor", "d1", "--model", "R29")[0] == 0
    body = {"mac": "0c1105aabbcc", "distributor": "d1", "model": "R29", "name": "Gate"}
    assert (await client("POST", "/v1/sites/office/devices", tokens["i2"], body))[0] == 403
    assert (await client("POST", "/v1/sites/office/devices", tokens["i1"], body))[0] == 200
    apartment = await client("POST", "/v1/sites/office/apartments", tokens["i1"], {"id": "a-1"})
    cli = cloud(ledger, "add-apartment", "office", "a-2", actor="i1")[1]
    assert (apartment[0], apartment[1]["rule"]) == (409, cli["rule"])
