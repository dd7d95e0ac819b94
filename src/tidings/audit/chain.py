"""The audit chain: each entry's hash covers its content and the previous entry's hash.

Changing, removing or reordering any stored entry breaks every hash after it, which
``verify`` finds with one pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from tidings.db.schema import audit_head, audit_log
from tidings.db.types import utcnow

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    subject_type: str
    subject_id: str
    detail: dict[str, Any] = field(default_factory=dict)


def canonical_detail(detail: dict[str, Any]) -> str:
    """The detail as stored: the exact text the hash covers, whatever the database."""
    return json.dumps(
        detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def entry_hash(prev_hash: str, seq: int, at: datetime, entry: AuditEntry, detail_text: str) -> str:
    canonical = json.dumps(
        [
            seq,
            at.astimezone(UTC).isoformat(timespec="microseconds"),
            entry.actor,
            entry.action,
            entry.subject_type,
            entry.subject_id,
            detail_text,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def append(conn: Connection, entries: Sequence[AuditEntry], *, at: datetime | None = None) -> None:
    """Append entries to the chain inside the caller's transaction.

    Call it last in a transaction: it locks the chain head until commit.
    """
    if not entries:
        return
    at = at or utcnow()
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    seq, prev = int(head.seq), str(head.hash)
    rows = []
    for entry in entries:
        seq += 1
        detail_text = canonical_detail(entry.detail)
        digest = entry_hash(prev, seq, at, entry, detail_text)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "actor": entry.actor,
                "action": entry.action,
                "subject_type": entry.subject_type,
                "subject_id": entry.subject_id,
                "detail": detail_text,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    conn.execute(audit_log.insert(), rows)
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))


@dataclass(frozen=True, slots=True)
class Verification:
    entries: int
    ok: bool
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(conn: Connection, *, page: int = 5000) -> Verification:
    """Walk the whole chain in order and recompute every hash."""
    prev, expected_seq, count, last = GENESIS_HASH, 1, 0, 0
    while True:
        rows: Iterable[Any] = conn.execute(
            select(audit_log).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(page)
        ).all()
        batch = list(rows)
        if not batch:
            break
        for row in batch:
            if row.seq != expected_seq:
                return Verification(count, False, expected_seq, f"entry {expected_seq} is missing")
            entry = AuditEntry(row.actor, row.action, row.subject_type, row.subject_id)
            digest = entry_hash(prev, row.seq, row.at, entry, row.detail)
            if row.prev_hash != prev or row.hash != digest:
                return Verification(count, False, row.seq, f"entry {row.seq} was altered")
            prev, expected_seq, count, last = digest, expected_seq + 1, count + 1, row.seq
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    if head.seq != count or head.hash != prev:
        return Verification(count, False, count + 1, "entries after the last one were removed")
    return Verification(count, True)
