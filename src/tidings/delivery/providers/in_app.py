"""In-app messages: the customer's inbox, written in the same transaction as the outcome."""

from __future__ import annotations

from tidings.db.ids import new_id
from tidings.db.types import utcnow
from tidings.delivery.providers.base import InAppProvider, OutboundMessage, SendReceipt


class InboxProvider(InAppProvider):
    name = "inbox"

    async def send(self, message: OutboundMessage) -> SendReceipt:
        inbox_id = new_id("msg")
        return SendReceipt(
            provider_message_id=inbox_id,
            inbox={
                "id": inbox_id,
                "customer_id": message.customer_id or message.address,
                "notification_id": message.notification_id,
                "kind": message.kind,
                "title": message.rendered.parts.get("title", ""),
                "body": message.rendered.parts.get("txt", ""),
                "created_at": utcnow(),
                "read_at": None,
            },
        )
