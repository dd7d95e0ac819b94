"""The suppression list: addresses that must not be sent to, and why.

One row per ``(channel, address)``. Three reasons put an address on it:

- ``hard_bounce``: the provider says the address cannot receive (Postmark HardBounce or an
  address it deactivated; Twilio errors 30005/30006). A dead address is dead for every
  message, refunds included.
- ``complaint``: the person told their mailbox provider the mail is spam (or unsubscribed
  through Postmark). Sending anything more to them harms every other customer's delivery.
- ``stop``: the person replied STOP to our SMS number. US carriers require that a STOP ends
  every message from that sender until the person texts START (CTIA Messaging Principles and
  Best Practices, 5.1.3 "Consumer Opt-Out"), and Twilio itself refuses further sends to the
  number (error 21610), so it blocks critical SMS too. A critical notification still reaches
  the customer on its other channels (email, in-app), which is how DESIGN invariant 4 (a
  critical message is never silenced) holds.

An explicit choice of the person (``stop``, ``complaint``) outranks a ``hard_bounce`` on the
same row, so lifting a bounce never forgets that they asked us to stop.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.dialect import upsert
from tidings.db.schema import suppressions

Reason = Literal["hard_bounce", "complaint", "stop"]
REASONS: tuple[Reason, ...] = ("hard_bounce", "complaint", "stop")
# Which reason a row keeps when another arrives for the same address: the person's own word
# beats what a mail server said.
_RANK = {"hard_bounce": 0, "complaint": 1, "stop": 1}
_DESCRIPTIONS = {
    "hard_bounce": "{address} bounced hard ({detail}); nothing is sent to it until an operator "
    "lifts it with DELETE /api/suppressions/{channel}/{address}",
    "complaint": "{address} reported our mail as spam or unsubscribed ({detail}); nothing is "
    "sent to it any more",
    "stop": "{address} replied STOP to our SMS number; no SMS is sent to it until they text START",
}
AUDIT_SUBJECT_MAX = 128  # audit_log.subject_id


def normalize_address(channel: str, address: str) -> str:
    """The form an address is stored and looked up in.

    Email: lower-cased as a whole. RFC 5321 2.4 lets the local part be case-sensitive, but no
    mailbox provider treats it so, and a bounce must block the address however a source
    capitalized it. SMS: the E.164 number as given (Twilio sends ``From`` in E.164).
    """
    address = address.strip()
    return address.lower() if channel == "email" else address


def reason_blocks(reason: str, *, critical: bool) -> bool:
    """Whether a suppression ``reason`` stops a message (``critical`` or not) to the address.

    Every reason blocks every message: see the module docstring for why ``stop`` does not
    spare critical SMS. An unknown reason blocks too, so a new reason fails closed.
    """
    del critical  # part of the question; no reason answers it differently today
    return True


def describe(row: dict[str, Any]) -> str:
    """The sentence an operator reads next to a message that was not sent."""
    template = _DESCRIPTIONS.get(row["reason"], "{address} is suppressed ({detail})")
    return template.format(
        address=row["address"],
        channel=row["channel"],
        detail=row.get("detail") or f"since {row['created_at']:%Y-%m-%d}",
    )


def suppression_for(conn: Connection, *, channel: str, address: str, critical: bool) -> str | None:
    """Why this address must not get this message, or None when it may."""
    row = get(conn, channel=channel, address=address)
    if row is None or not reason_blocks(row["reason"], critical=critical):
        return None
    return describe(row)


def get(conn: Connection, *, channel: str, address: str) -> dict[str, Any] | None:
    found = (
        conn.execute(
            select(suppressions).where(
                suppressions.c.channel == channel,
                suppressions.c.address == normalize_address(channel, address),
            )
        )
        .mappings()
        .first()
    )
    return dict(found) if found else None


def list_suppressions(
    conn: Connection, *, channel: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(suppressions).order_by(suppressions.c.created_at.desc()).limit(limit)
    if channel:
        query = query.where(suppressions.c.channel == channel)
    return [dict(row) for row in conn.execute(query).mappings()]


def suppress(
    conn: Connection,
    *,
    channel: str,
    address: str,
    reason: Reason,
    source: str,
    detail: str | None,
    now: datetime,
    actor: str | None = None,
    audit: list[AuditEntry] | None = None,
) -> bool:
    """Put an address on the list; returns whether the list changed (and was audited).

    The audit entry is appended to the chain at once, or added to ``audit`` for a caller
    that appends its entries last in its transaction. Concurrent callers for one address are
    safe: the insert does nothing on conflict and the row is then compared, so neither fails
    on the primary key.
    """
    address = normalize_address(channel, address)
    values = {
        "channel": channel,
        "address": address,
        "reason": reason,
        "detail": detail,
        "source": source,
        "created_at": now,
    }
    # RETURNING, not rowcount: drivers do not all report a count for ON CONFLICT DO NOTHING.
    inserted = conn.execute(
        upsert(conn, suppressions)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(suppressions.c.address)
    ).first()
    changed = inserted is not None
    if not changed:
        existing = get(conn, channel=channel, address=address)
        if existing is not None and _RANK[reason] > _RANK.get(existing["reason"], 0):
            conn.execute(
                update(suppressions)
                .where(suppressions.c.channel == channel, suppressions.c.address == address)
                .values(**values)
            )
            changed = True
    if changed:
        _audit(conn, actor or f"provider:{source}", "suppression.added", values, now, audit)
    return changed


def lift(
    conn: Connection,
    *,
    channel: str,
    address: str,
    only_reason: Reason | None = None,
    actor: str = "system",
    now: datetime,
    audit: list[AuditEntry] | None = None,
) -> dict[str, Any] | None:
    """Take an address off the list; returns the row removed (and audited), if any.

    ``only_reason`` removes the row only when it has that reason: a START lifts a STOP,
    never a complaint or a bounce someone else recorded.
    """
    row = get(conn, channel=channel, address=address)
    if row is None or (only_reason is not None and row["reason"] != only_reason):
        return None
    conn.execute(
        delete(suppressions).where(
            suppressions.c.channel == row["channel"], suppressions.c.address == row["address"]
        )
    )
    _audit(conn, actor, "suppression.lifted", row, now, audit)
    return row


def _audit(
    conn: Connection,
    actor: str,
    action: str,
    row: dict[str, Any],
    now: datetime,
    collect: list[AuditEntry] | None,
) -> None:
    subject = f"{row['channel']}:{row['address']}"
    if len(subject) > AUDIT_SUBJECT_MAX:
        # Only a very long address: keep the subject findable and within the column.
        subject = f"{row['channel']}:sha256:{hashlib.sha256(row['address'].encode()).hexdigest()}"
    detail = {key: row[key] for key in ("channel", "address", "reason", "source", "detail")}
    entry = AuditEntry(actor, action, "suppression", subject, detail)
    if collect is not None:
        collect.append(entry)
    else:
        append(conn, [entry], at=now)
