"""Channels: push devices, the suppression list, provider receipts, delivery outcomes per
provider, deferred messages merged; shipments known by their source's id too, returns
known by their order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shipments") as batch:
        batch.add_column(sa.Column("shipment_id", sa.String(length=256), nullable=True))
        batch.create_index("ix_shipments_shipment_id", ["shipment_id"])
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("provider", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("provider_message_id", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("delivered_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("acknowledged_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("merge_key", sa.String(length=64), nullable=True))
        batch.create_index("ix_notifications_provider_message_id", ["provider_message_id"])
        batch.create_index("ix_notifications_merge_key", ["merge_key"])
        batch.create_index("ix_notifications_sent_at", ["sent_at"])
    op.create_table(
        "returns",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_returns")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_devices_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("customer_id", "address_hash", name="uq_devices_customer_id"),
    )
    op.create_table(
        "suppressions",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "address", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_message_id", sa.String(length=512), nullable=True),
        sa.Column("notification_id", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
    )
    op.create_index("ix_receipts_notification_id", "receipts", ["notification_id"])


def downgrade() -> None:
    op.drop_index("ix_receipts_notification_id", table_name="receipts")
    for table in ("receipts", "suppressions", "devices", "returns"):
        op.drop_table(table)
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_merge_key")
        batch.drop_index("ix_notifications_sent_at")
        batch.drop_index("ix_notifications_provider_message_id")
        for column in (
            "merge_key",
            "acknowledged_at",
            "delivered_at",
            "provider_message_id",
            "provider",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("shipments") as batch:
        batch.drop_index("ix_shipments_shipment_id")
        batch.drop_column("shipment_id")
