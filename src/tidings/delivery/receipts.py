"""Receipts applied to the database: what a provider (or our own tracking) says became of a
message, recorded and turned into the notification's status and the suppression list.

One call is one transaction's work: the ``receipts`` row, the notification's move, the
suppression, and their audit entries (DESIGN "delivery": receipts flow back in). A receipt
is never dropped: one whose message is unknown is still stored, with no notification.

The notification state machine (DESIGN "State machines") only moves forward:
``queued`` < ``sent`` < ``delivered`` < ``acknowledged``. A late "delivered" after an open
is recorded and changes nothing. The bad endings are ``bounced``, ``complained`` and
``failed``; see ``next_status`` for which state each may replace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from tidings.audit.chain import AuditEntry, append
from tidings.db.ids import new_id
from tidings.db.schema import notifications, receipts
from tidings.delivery import suppressions

Keyword = Literal["stop", "start", "help"]

# Where a notification stands on the way to its reader.
PROGRESS: Mapping[str, int] = {"queued": 0, "sent": 1, "delivered": 2, "acknowledged": 3}
# The bad endings, and the states each may replace:
# - complained: whatever was reached; a complaint usually follows an open.
# - bounced: up to delivered; a mail server may accept a message and bounce it later (an
#   asynchronous bounce), but a message that was opened was not bounced.
# - failed: only before delivery was confirmed.
_REPLACES: Mapping[str, int] = {"complained": 3, "bounced": 2, "failed": 1}
_TARGET: Mapping[str, str] = {
    "delivered": "delivered",
    "opened": "acknowledged",
    "clicked": "acknowledged",
    "bounced": "bounced",
    "complained": "complained",
    "failed": "failed",
}


# Refused receipts are kept in the reject log under this channel.
REJECT_CHANNEL = "receipts"


@dataclass(frozen=True, slots=True)
class Receipt:
    """One report about one message, in Tidings' terms.

    ``outcome``: delivered | opened | clicked | bounced | complained | failed, or a report
    that moves nothing (sent, pending). ``hard`` marks a bounce or failure that says the
    address itself is dead; a bounced receipt that is not hard is a soft bounce.
    """

    provider: str
    channel: str  # the suppression list's channel: email | sms
    outcome: str
    provider_message_id: str | None = None
    # Our id as the callback carried it: "<notification_id>" or the "<id>.<channel>" message id.
    notification: str | None = None
    address: str | None = None  # where the provider says the message went
    hard: bool = False
    detail: str | None = None

    @property
    def recorded_outcome(self) -> str:
        return "soft_bounce" if self.outcome == "bounced" and not self.hard else self.outcome


@dataclass(frozen=True, slots=True)
class AppliedReceipt:
    receipt_id: str
    notification_id: str | None
    previous_status: str | None
    status: str | None  # the notification's status now
    suppressed: str | None  # the suppression reason this receipt added, if any

    @property
    def changed(self) -> bool:
        return self.status != self.previous_status


def next_status(current: str, outcome: str, *, hard: bool) -> str | None:
    """The status a receipt moves a notification in ``current`` to, or None to leave it."""
    target = _TARGET.get(outcome)
    rank = PROGRESS.get(current)
    if target is None or rank is None:
        # Nothing to move to, or the notification already ended (bounced, failed, dead...).
        return None
    if outcome == "bounced" and not hard:
        return None  # a soft bounce: the address may work tomorrow, the message may retry
    if target in PROGRESS:
        return target if PROGRESS[target] > rank else None
    return target if rank <= _REPLACES[target] else None


def suppression_reason(outcome: str, *, hard: bool) -> suppressions.Reason | None:
    """Whether a receipt puts its address on the suppression list, and why."""
    if outcome == "complained":
        return "complaint"
    if hard and outcome in ("bounced", "failed"):
        return "hard_bounce"
    return None


def notification_id_of(value: str | None) -> str | None:
    """Our notification id from a callback's value: ids have no dot, message ids add one."""
    if not value:
        return None
    return value.split(".", 1)[0] or None


def apply_receipt(
    conn: Connection, *, receipt: Receipt, now: datetime, actor: str | None = None
) -> AppliedReceipt:
    """Record a receipt and apply it, in the caller's transaction (audit appended last)."""
    actor = actor or f"provider:{receipt.provider}"
    row = _find(conn, receipt)
    receipt_id = new_id("rct")
    conn.execute(
        receipts.insert().values(
            id=receipt_id,
            provider=receipt.provider,
            provider_message_id=receipt.provider_message_id,
            notification_id=row["id"] if row else None,
            outcome=receipt.recorded_outcome,
            detail=receipt.detail,
            received_at=now,
        )
    )
    audit: list[AuditEntry] = []
    previous = status = row["status"] if row else None
    if row is not None:
        moved = next_status(row["status"], receipt.outcome, hard=receipt.hard)
        if moved is not None:
            _move(conn, row, moved, receipt, now)
            status = moved
            audit.append(
                AuditEntry(
                    actor,
                    f"receipt.{receipt.recorded_outcome}",
                    "notification",
                    row["id"],
                    {
                        "provider": receipt.provider,
                        "receipt_id": receipt_id,
                        "from": previous,
                        "to": moved,
                        **({"detail": receipt.detail} if receipt.detail else {}),
                    },
                )
            )
    reason = suppression_reason(receipt.outcome, hard=receipt.hard)
    # What we sent to is what sending looks up; the provider's copy covers unknown messages.
    address = (row["recipient"] if row else None) or receipt.address
    added = None
    if reason is not None and address:
        changed = suppressions.suppress(
            conn,
            channel=receipt.channel,
            address=address,
            reason=reason,
            source=receipt.provider,
            detail=receipt.detail,
            now=now,
            actor=actor,
            audit=audit,
        )
        added = reason if changed else None
    append(conn, audit, at=now)
    return AppliedReceipt(receipt_id, row["id"] if row else None, previous, status, added)


def apply_keyword(
    conn: Connection,
    *,
    provider: str,
    keyword: Keyword,
    address: str,
    provider_message_id: str | None,
    detail: str | None,
    now: datetime,
) -> bool:
    """An opt-out keyword texted to our number: STOP suppresses the number for SMS, START
    lifts that (and only that). Returns whether the suppression list changed.

    STOP and START are kept as receipts too (``opted_out``, ``opted_in``: DESIGN's
    ``recipient.opted_out``), so the person's own words stay on record. HELP changes
    nothing: the provider answers it.
    """
    if keyword == "help":
        return False
    actor = f"provider:{provider}"
    conn.execute(
        receipts.insert().values(
            id=new_id("rct"),
            provider=provider,
            provider_message_id=provider_message_id,
            notification_id=None,
            outcome="opted_out" if keyword == "stop" else "opted_in",
            detail=detail,
            received_at=now,
        )
    )
    audit: list[AuditEntry] = []
    if keyword == "stop":
        changed = suppressions.suppress(
            conn,
            channel="sms",
            address=address,
            reason="stop",
            source=provider,
            detail=detail,
            now=now,
            actor=actor,
            audit=audit,
        )
    else:
        lifted = suppressions.lift(
            conn,
            channel="sms",
            address=address,
            only_reason="stop",
            actor=actor,
            now=now,
            audit=audit,
        )
        changed = lifted is not None
    append(conn, audit, at=now)
    return changed


def is_known(conn: Connection, notification_id: str) -> bool:
    found = conn.execute(
        select(notifications.c.id).where(notifications.c.id == notification_id)
    ).first()
    return found is not None


def receipts_for(conn: Connection, notification_id: str) -> list[dict[str, Any]]:
    query = (
        select(receipts)
        .where(receipts.c.notification_id == notification_id)
        .order_by(receipts.c.received_at, receipts.c.id)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def _find(conn: Connection, receipt: Receipt) -> dict[str, Any] | None:
    columns = (
        notifications.c.id,
        notifications.c.status,
        notifications.c.recipient,
        notifications.c.delivered_at,
        notifications.c.acknowledged_at,
    )
    # The row is locked until commit (PostgreSQL; SQLite writers are serialized), so two
    # receipts for one message cannot both read "sent" and the older one win.
    notification_id = notification_id_of(receipt.notification)
    if notification_id is not None:
        found = (
            conn.execute(
                select(*columns).where(notifications.c.id == notification_id).with_for_update()
            )
            .mappings()
            .first()
        )
        if found is not None:
            return dict(found)
    if receipt.provider_message_id:
        found = (
            conn.execute(
                select(*columns)
                .where(
                    notifications.c.provider == receipt.provider,
                    notifications.c.provider_message_id == receipt.provider_message_id,
                )
                .limit(1)
                .with_for_update()
            )
            .mappings()
            .first()
        )
        if found is not None:
            return dict(found)
    return None


def _move(
    conn: Connection, row: dict[str, Any], status: str, receipt: Receipt, now: datetime
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status in ("delivered", "acknowledged") and row["delivered_at"] is None:
        # An open or a click proves delivery even when the delivery receipt never came.
        values["delivered_at"] = now
    if status == "acknowledged" and row["acknowledged_at"] is None:
        values["acknowledged_at"] = now
    if status in ("bounced", "complained", "failed"):
        values["reason"] = f"{receipt.provider}: {receipt.detail or receipt.recorded_outcome}"
    conn.execute(update(notifications).where(notifications.c.id == row["id"]).values(**values))
