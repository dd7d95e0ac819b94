"""Payment retries: policies, workflows with their attempts, the inbox of events billing
acts on; refund milestones.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.db.types import JSONType, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OPEN = "status IN ('failed', 'retry_scheduled', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("approved_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("authorized_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("succeeded_at", UTCDateTime(), nullable=True))
    op.create_table(
        "payment_retry_policies",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("policy", JSONType, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_payment_retry_policies")),
    )
    op.create_table(
        "payment_retry_workflows",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("policy", JSONType, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=32), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("final_action", sa.String(length=32), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.Column("opened_by_event", sa.String(length=32), nullable=True),
        sa.Column("recovered_amount", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_retry_workflows_amount_positive")),
        sa.CheckConstraint(
            "attempts >= 0", name=op.f("ck_payment_retry_workflows_attempts_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_retry_workflows")),
    )
    op.create_index(
        "ix_payment_retry_workflows_due", "payment_retry_workflows", ["status", "next_attempt_at"]
    )
    op.create_index("ix_payment_retry_workflows_order_id", "payment_retry_workflows", ["order_id"])
    op.create_index(
        "uq_payment_retry_workflows_open_payment",
        "payment_retry_workflows",
        ["payment_id"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )
    op.create_table(
        "payment_retry_attempts",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("category", sa.String(length=8), nullable=True),
        sa.Column("network", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["payment_retry_workflows.id"],
            name=op.f("fk_payment_retry_attempts_workflow_id_payment_retry_workflows"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_retry_attempts")),
        sa.UniqueConstraint("workflow_id", "number", name="uq_payment_retry_attempts_number"),
    )
    op.create_table(
        "billing_inbox",
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("retry_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_billing_inbox")),
    )
    op.create_index(
        "ix_billing_inbox_pending",
        "billing_inbox",
        ["queued_at"],
        sqlite_where=sa.text("applied_at IS NULL"),
        postgresql_where=sa.text("applied_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_billing_inbox_pending", table_name="billing_inbox")
    op.drop_table("billing_inbox")
    op.drop_table("payment_retry_attempts")
    op.drop_index("uq_payment_retry_workflows_open_payment", table_name="payment_retry_workflows")
    op.drop_index("ix_payment_retry_workflows_order_id", table_name="payment_retry_workflows")
    op.drop_index("ix_payment_retry_workflows_due", table_name="payment_retry_workflows")
    op.drop_table("payment_retry_workflows")
    op.drop_table("payment_retry_policies")
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("succeeded_at")
        batch.drop_column("authorized_at")
        batch.drop_column("approved_at")
