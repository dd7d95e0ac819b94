"""Families: order lines and status, shipment progress, stock, subscriptions, timers,
notification groups and digests, customer segments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import JSONType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("segment", sa.String(length=64), nullable=True))
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="open")
        )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("group_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("digest_key", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("scheduled_for", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("extra", JSONType, nullable=True))
        batch.create_index("ix_notifications_group_key", ["group_key"])
        batch.create_index("ix_notifications_digest_key", ["digest_key"])
        batch.create_index("ix_notifications_parent_id", ["parent_id"])
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_lines_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", "sku", name=op.f("pk_order_lines")),
    )
    op.create_index("ix_order_lines_sku", "order_lines", ["sku"])
    op.create_table(
        "shipments",
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_shipments")),
    )
    op.create_table(
        "stock_levels",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("location", sa.String(length=128), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sku", "location", name=op.f("pk_stock_levels")),
    )
    op.create_table(
        "sku_states",
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("restock_eta", sa.String(length=10), nullable=True),
        sa.Column("notified_eta", sa.String(length=10), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_sku_states")),
    )
    op.create_table(
        "stock_subscriptions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_stock_subscriptions_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_subscriptions")),
        sa.UniqueConstraint("sku", "customer_id", name="uq_stock_subscriptions_sku"),
    )
    op.create_index("ix_stock_subscriptions_waiting", "stock_subscriptions", ["sku", "created_at"])
    op.create_table(
        "timers",
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_timers")),
    )
    op.create_index("ix_timers_due", "timers", ["status", "due_at"])


def downgrade() -> None:
    for table in (
        "timers",
        "stock_subscriptions",
        "sku_states",
        "stock_levels",
        "shipments",
        "order_lines",
    ):
        op.drop_table(table)
    with op.batch_alter_table("notifications") as batch:
        for name in (
            "ix_notifications_parent_id",
            "ix_notifications_digest_key",
            "ix_notifications_group_key",
        ):
            batch.drop_index(name)
        for column in ("extra", "scheduled_for", "parent_id", "digest_key", "group_key"):
            batch.drop_column(column)
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("status")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("segment")
