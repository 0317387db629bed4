"""Keys and issued documents (PROTOCOL.md "Trust", "Key scopes", "Root rotation", "Signed documents"):
the root and signing keys' states (the private keys are PEM files beside the ledger; the ledger knows
their state), and what was issued under each key (``trust:*``, a device's MAC, ``fw:<mac>``,
``cmd:<mac>``): its ``seq``, the digest of its claims, and the token until the broker acknowledged it.

A ``seq`` is taken by a conditional write (compare and set on the last ``seq``), so two ``serve``
processes on one ledger never issue the same ``seq`` twice: the second finds it taken and leaves that
document to the first. The ``signing_keys``, ``roots`` and ``issued`` tables' SQL is here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import sqlalchemy as sa

from cloud_stub.storage.database import Transaction
from cloud_stub.storage.metadata import metadata

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("file", sa.Text, nullable=False),  # the private key's PEM file
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("not_after", sa.Float, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # active (signs), listed (trusted, not signing), retired
    sa.Column("purpose", sa.Text, nullable=False, server_default="any"),  # billing, releases, commands; any
)

roots = sa.Table(
    "roots",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # active (trusted; the oldest signs trust), retired
)

issued = sa.Table(
    "issued",
    metadata,
    sa.Column("device", sa.Text, primary_key=True),  # the key documents are issued under (a MAC, trust:*...)
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),  # of the claims last issued: re-issue only on change
    sa.Column("issued_at", sa.Float, nullable=False, server_default="0"),
    sa.Column("topic", sa.Text),
    sa.Column("token", sa.Text),  # NULL once the broker acknowledged it
)


class SigningKey(NamedTuple):
    kid: str
    file: str
    created: float
    not_after: float
    state: str
    purpose: str


class Root(NamedTuple):
    kid: str
    file: str
    state: str


class Issue(NamedTuple):
    """What was last issued under a key."""

    key: str
    seq: int
    digest: str
    issued_at: float


class Unsent(NamedTuple):
    """A signed document issued and not yet acknowledged by the broker."""

    key: str
    seq: int
    topic: str
    token: str


class Keys:
    """The key states of one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def lock(self) -> None:
        """Changes to the keys one process at a time: each reads what exists before it adds (two ``serve``
        starting at once must not both make the first root, or a signer each)."""
        self.tx.exclusive("signing-keys")

    def count(self) -> int:
        return int(self.tx.scalar(sa.select(sa.func.count()).select_from(signing_keys)))

    def add(self, key: SigningKey) -> None:
        """A new active signer; the purpose's previous one stays listed (trusted, not signing)."""
        self.tx.execute(
            sa.update(signing_keys)
            .where(signing_keys.c.state == "active", signing_keys.c.purpose == key.purpose)
            .values(state="listed")
        )
        self.tx.execute(
            sa.insert(signing_keys).values(
                kid=key.kid, file=key.file, created=key.created, not_after=key.not_after, state=key.state,
                purpose=key.purpose,
            )
        )  # fmt: skip

    def active(self, purpose: str) -> SigningKey | None:
        row = self.tx.first(
            sa.select(*signing_keys.c).where(signing_keys.c.state == "active", signing_keys.c.purpose == purpose)
        )
        return None if row is None else SigningKey(*row)

    def demote(self, purpose: str) -> int:
        """The active signer of ``purpose`` stops signing but stays listed; how many."""
        return int(
            self.tx.execute(
                sa.update(signing_keys)
                .where(signing_keys.c.state == "active", signing_keys.c.purpose == purpose)
                .values(state="listed")
            ).rowcount
        )

    def trusted(self) -> list[SigningKey]:
        """Every signer not retired, oldest first (the trust document's ``keys``)."""
        rows = self.tx.all(
            sa.select(*signing_keys.c)
            .where(signing_keys.c.state != "retired")
            .order_by(signing_keys.c.created, signing_keys.c.kid)
        )
        return [SigningKey(*r) for r in rows]

    def listed(self, purposes: Iterable[str]) -> list[str]:
        rows = self.tx.all(
            sa.select(signing_keys.c.kid)
            .where(signing_keys.c.state == "listed", signing_keys.c.purpose.in_(list(purposes)))
            .order_by(signing_keys.c.created, signing_keys.c.kid)
        )
        return [r[0] for r in rows]

    def retire(self, kids: Sequence[str]) -> None:
        if kids:
            self.tx.execute(sa.update(signing_keys).where(signing_keys.c.kid.in_(list(kids))).values(state="retired"))

    # -- roots ------------------------------------------------------------------------------------------
    def roots(self, *, active_only: bool = False) -> list[Root]:
        query = sa.select(roots.c.kid, roots.c.file, roots.c.state).order_by(roots.c.created, roots.c.kid)
        if active_only:
            query = query.where(roots.c.state == "active")
        return [Root(*r) for r in self.tx.all(query)]

    def add_root(self, kid: str, file: str, now: float) -> None:
        self.tx.execute(sa.insert(roots).values(kid=kid, file=file, created=now, state="active"))

    def retire_root(self, kid: str) -> None:
        self.tx.execute(sa.update(roots).where(roots.c.kid == kid).values(state="retired"))


class Issued:
    """What was issued, by key, in one unit of work."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def last(self, key: str) -> Issue | None:
        row = self.tx.first(
            sa.select(issued.c.device, issued.c.seq, issued.c.digest, issued.c.issued_at).where(issued.c.device == key)
        )
        return None if row is None else Issue(*row)

    def every(self) -> dict[str, Issue]:
        """The last issue under every key (one read for a whole pass)."""
        rows = self.tx.all(sa.select(issued.c.device, issued.c.seq, issued.c.digest, issued.c.issued_at))
        return {r[0]: Issue(*r) for r in rows}

    def take(self, key: str, after: Issue | None, digest: str, now: float) -> int | None:
        """Take the ``seq`` after ``after`` (what was read as the last issue) for ``digest``; None when
        another writer took it first."""
        if after is None:
            result = self.tx.execute(
                self.tx.insert_ignore(issued).values(device=key, seq=1, digest=digest, issued_at=now)
            )
            return 1 if result.rowcount == 1 else None
        result = self.tx.execute(
            sa.update(issued)
            .where(issued.c.device == key, issued.c.seq == after.seq)
            .values(seq=after.seq + 1, digest=digest, issued_at=now)
        )
        return after.seq + 1 if result.rowcount == 1 else None

    def hold(self, key: str, seq: int, topic: str, token: str) -> None:
        """Keep ``token``, issued under ``key`` as ``seq``, until :meth:`sent` (persist, then act)."""
        self.tx.execute(
            sa.update(issued).where(issued.c.device == key, issued.c.seq == seq).values(topic=topic, token=token)
        )

    def unsent(self) -> list[Unsent]:
        """Every document issued and not yet acknowledged, trust documents first."""
        rows = self.tx.all(
            sa.select(issued.c.device, issued.c.seq, issued.c.topic, issued.c.token)
            .where(issued.c.token.is_not(None))
            .order_by(sa.case((issued.c.device.like("trust:%"), 0), else_=1), issued.c.device)
        )
        return [Unsent(*r) for r in rows]

    def sent(self, documents: Sequence[Unsent]) -> None:
        """The broker acknowledged ``documents`` (unless something newer was issued under the key since)."""
        if documents:
            self.tx.execute(
                sa.update(issued)
                .where(issued.c.device == sa.bindparam("k"), issued.c.seq == sa.bindparam("q"))
                .values(topic=None, token=None),
                [{"k": d.key, "q": d.seq} for d in documents],
            )

    def forget_digests(self) -> None:
        """Every device's documents are issued again on the next pass (new signers)."""
        self.tx.execute(
            sa.update(issued)
            .where(issued.c.device.not_like("trust:%"), issued.c.device.not_like("cmd:%"))
            .values(digest="")
        )
