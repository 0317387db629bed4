"""HTTP as a well-kept server speaks it (uvicorn, FastAPI): what a hand-written server got wrong, tokens that
expire and are revoked, idempotent writes by key, and requests answered concurrently."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloud_stub import api as http_api
from cloud_stub.http import Served
from tests.support.ledger import DOOR2, LedgerAt, cloud, setup_ledger


@dataclass
class Server:
    port: int
    ledger: LedgerAt
    token: str

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Authorization": f"Bearer {self.token}", **({"Content-Type": "application/json"} if body else {}),
                **(headers or {})}  # fmt: skip
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw) if raw else None

    def raw(self, request: bytes) -> bytes:
        """Bytes in, bytes out: for what http.client will not send."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


@pytest.fixture
async def server(ledger_at: LedgerAt) -> AsyncIterator[Server]:
    setup_ledger(ledger_at)
    token = cloud(ledger_at, "api-token", "create", "i1")[1]["result"]["token"]
    book = ledger_at.open()
    served = await Served(http_api.app(book)).start()
    try:
        yield Server(served.port, ledger_at, token)
    finally:
        await served.stop()
        book.close()


def _chunked(body: bytes, path: str, token: str) -> bytes:
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:7], body[7:]))
    return (
        (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )


async def test_what_a_hand_written_server_got_wrong(server: Server) -> None:
    """Queries are percent-decoded; a chunked body is read (a chunked pay with auto_renew renews
    automatically); the Bearer scheme is case-insensitive (RFC 9110); TRACE on a route is 405, not 404; a
    body that is not JSON is 415; a negative Content-Length is 400; an oversized chunked body is 413."""
    status, _, listed = await asyncio.to_thread(server.call, "GET", "/v1/upgrades?project=%6Fffice&status=%50ending")
    assert (status, listed) == (200, [])
    status, _, _ = await asyncio.to_thread(server.call, "GET", "/v1/upgrades?status=Nonsense")
    assert status == 400
    status, _, site = await asyncio.to_thread(server.call, "GET", "/v1/sites/%6Fffice")  # paths decoded too
    assert (status, site["id"]) == (200, "office")
    status, _, error = await asyncio.to_thread(server.call, "GET", "/v1/sites/caf%C3%A9-1")
    assert (status, "A-Za-z0-9_-" in error["message"]) == (400, True), error  # PROTOCOL.md's ids: not a 404
    placed = cloud(server.ledger, "order", "--item", DOOR2, "--renew-to", "2027-01-31", "--source", "credit",
                   actor="i1")[1]["result"]  # fmt: skip
    pay = f"/v1/orders/{placed['txn']}/pay"
    answer = await asyncio.to_thread(server.raw, _chunked(b'{"auto_renew": true}', pay, server.token))
    assert answer.startswith(b"HTTP/1.1 409"), answer[:200]  # read: a new office cannot auto-renew (seed 000)
    assert b"commercial_auto_renew" in answer
    answer = await asyncio.to_thread(server.raw, _chunked(b'{"auto_renew": false}', pay, server.token))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"paid"' in answer
    status, _, _ = await asyncio.to_thread(
        server.call, "GET", "/v1/sites", None, {"Authorization": f"bearer {server.token}"}
    )
    assert status == 200
    status, headers, _ = await asyncio.to_thread(server.call, "TRACE", "/v1/sites")
    assert (status, "GET" in headers.get("allow", "")) == (405, True)
    assert (await asyncio.to_thread(server.call, "GET", "/v1/nothing-here"))[0] == 404
    status, _, error = await asyncio.to_thread(
        server.call, "POST", "/v1/quotes", b"items=x", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415, error
    answer = await asyncio.to_thread(
        server.raw,
        f"POST /v1/quotes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server.token}\r\nContent-Type: "
        "application/json\r\nContent-Length: -5\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    big = b'{"items": ["' + b"x" * (1025 * 1024) + b'"]}'
    answer = await asyncio.to_thread(server.raw, _chunked(big, "/v1/quotes", server.token))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


async def test_tokens_expire_and_are_revoked(server: Server) -> None:
    """An expired or revoked token is 401; the operator lists an account's tokens without their secrets."""
    made = cloud(server.ledger, "--now", "2026-01-01T00:00:00Z", "api-token", "create", "i1", "--days", "1",
                 "--label", "old")[1]["result"]  # fmt: skip
    status, headers, _ = await asyncio.to_thread(server.call, "GET", "/v1/sites", None,
                                                 {"Authorization": f"Bearer {made['token']}"})  # fmt: skip
    assert (status, headers["www-authenticate"]) == (401, "Bearer")
    assert (await asyncio.to_thread(server.call, "GET", "/v1/sites"))[0] == 200
    listed = cloud(server.ledger, "api-token", "list", "i1")[1]["result"]
    assert sorted(t["state"] for t in listed) == ["active", "expired"]
    assert all("token" not in t for t in listed)
    current = next(t for t in listed if t["state"] == "active")
    assert cloud(server.ledger, "api-token", "revoke", current["id"])[0] == 0
    assert (await asyncio.to_thread(server.call, "GET", "/v1/sites"))[0] == 401
    assert cloud(server.ledger, "api-token", "revoke", current["id"])[0] == 2  # not twice
    assert cloud(server.ledger, "api-token", "list", "i1", actor="i1")[0] == 0  # an account sees its own
    assert cloud(server.ledger, "api-token", "revoke", current["id"], actor="i1")[1]["rule"] == "operator_only"
    until = cloud(server.ledger, "--now", "2026-01-01T00:00:00Z", "api-token", "create", "i1", "--expires",
                  "2026-03-31T12:00:00+02:00")[1]["result"]  # fmt: skip
    assert until["expires"] == 1_774_951_200.0  # 2026-03-31T10:00:00Z
    code, said = cloud(server.ledger, "--now", "2026-01-01T00:00:00Z", "api-token", "create", "i1", "--expires",
                       "2025-12-31T00:00:00Z")  # fmt: skip
    assert (code, said["rule"]) == (1, "bad_expiry")  # in the past, or beyond 366 days
    assert cloud(server.ledger, "api-token", "create", "i1", "--days", "3", "--expires", "2027-01-01T00:00:00Z")[0] == 2


async def test_the_same_idempotency_key_answers_once_and_does_nothing_more(server: Server) -> None:
    """An allocation sent three times with one key moves credits once; the answer is replayed; the key with
    another body is 422; a refusal is the key's answer too."""
    cloud(server.ledger, "add-account", "pm9", "--role", "pm", "--name", "P", "--parent", "i1")
    body = json.dumps({"account": "pm9", "amount": 5}).encode()
    answers = [await asyncio.to_thread(server.call, "POST", "/v1/credits/allocate", body, {"Idempotency-Key": "k-1"})
               for _ in range(3)]  # fmt: skip
    assert [a[0] for a in answers] == [200, 200, 200]
    assert answers[0][2] == answers[1][2] == answers[2][2] == {"remaining": 5, "left": 55}
    assert ("idempotent-replayed" in answers[0][1], answers[1][1].get("idempotent-replayed")) == (False, "true")
    assert cloud(server.ledger, "credit-log", actor="i1")[1]["result"]["available"] == 55
    other = json.dumps({"account": "pm9", "amount": 6}).encode()
    status, _, error = await asyncio.to_thread(server.call, "POST", "/v1/credits/allocate", other,
                                               {"Idempotency-Key": "k-1"})  # fmt: skip
    assert status == 422, error
    too_much = json.dumps({"account": "pm9", "amount": 500}).encode()
    first = await asyncio.to_thread(server.call, "POST", "/v1/credits/allocate", too_much, {"Idempotency-Key": "k-2"})
    again = await asyncio.to_thread(server.call, "POST", "/v1/credits/allocate", too_much, {"Idempotency-Key": "k-2"})
    assert (first[0], first[2]["rule"]) == (again[0], again[2]["rule"]) == (409, "not_enough_credits")


async def test_requests_are_answered_concurrently(server: Server) -> None:
    """A client that sends half a request holds nobody up: twenty others are answered meanwhile."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow:
        slow.sendall(f"POST /v1/quotes HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {server.token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())  # fmt: skip
        answers = await asyncio.gather(*(asyncio.to_thread(server.call, "GET", "/v1/sites/office/services")
                                         for _ in range(20)))  # fmt: skip
        assert [a[0] for a in answers] == [200] * 20
