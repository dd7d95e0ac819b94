"""API keys: shown once at creation, stored only as a SHA-256 digest.

A key is ``tdg_<prefix>_<secret>``; the prefix finds the row, the digest proves the key.
Keys carry 160 random bits, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from tidings.db.ids import new_id
from tidings.db.schema import api_keys

SCOPES = {
    "events:write": "post events",
    "events:read": "read events and order timelines",
    "notifications:read": "read notifications",
    "inbox:read": "read customers' in-app inboxes",
    "inbox:write": "mark in-app messages read",
    "customers:read": "read customer preferences",
    "customers:write": "change customer preferences",
    "rejects:read": "list rejected payloads",
    "rejects:write": "replay rejected payloads",
    "dlq:read": "list dead letters",
    "dlq:write": "replay dead letters",
    "audit:read": "read and verify the audit log",
    "metrics:read": "read delivery metrics",
    "refunds:read": "read refunds",
    "refunds:write": "request and cancel refunds",
    "refunds:approve": "approve and reject refunds",
    "billing:read": "read the ledger, analytics and retry policies",
    "billing:write": "change retry policies",
    "retries:read": "read payment retry workflows",
    "retries:write": "retry payments now and cancel retry workflows",
    "admin": "everything",
}


class UnknownScope(ValueError):
    code = "unknown_scope"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    actor: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    conn: Connection, *, name: str, scopes: Iterable[str], actor: str | None, now: datetime
) -> tuple[str, str]:
    """Returns (key id, the key). The key is not stored and cannot be shown again."""
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise UnknownScope(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from: {', '.join(SCOPES)}"
        )
    prefix = secrets.token_hex(4)
    key = f"tdg_{prefix}_{secrets.token_urlsafe(20)}"
    key_id = new_id("key")
    conn.execute(
        api_keys.insert().values(
            id=key_id,
            name=name,
            prefix=prefix,
            key_hash=_digest(key),
            scopes=wanted,
            actor=actor or f"apikey:{name}",
            created_at=now,
            revoked_at=None,
        )
    )
    return key_id, key


def list_keys(conn: Connection) -> list[dict[str, Any]]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    return [dict(row) for row in conn.execute(query).mappings()]


def revoke_key(conn: Connection, key_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


class KeyVerifier:
    """Checks presented keys; remembers good ones briefly so requests skip the database.

    A revoked key stops working within ``ttl`` seconds.
    """

    def __init__(self, engine: Engine, *, ttl: float = 10.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def verify(self, key: str) -> Principal | None:
        digest = _digest(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        parts = key.split("_")
        if len(parts) < 3 or parts[0] != "tdg":
            return None
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.prefix == parts[1]))
                .mappings()
                .first()
            )
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["key_hash"], digest):
            return None
        principal = Principal(row["id"], row["name"], row["actor"], frozenset(row["scopes"]))
        with self._lock:
            self._cache[digest] = (now + self._ttl, principal)
        return principal
