"""Tables. SQLAlchemy Core on purpose: the hot paths are set-based statements, not objects."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from tidings.db.types import JSONType, UTCDateTime

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid.
_BigIntId = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", Text),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("locale", String(35)),
    Column("time_zone", String(64)),
    Column("segment", String(64)),  # e.g. "wholesale": rules can exclude segments
    # What the customer chose (locale, time zone, opted-out categories); it wins over
    # what sources say about the customer, which only fills the profile columns.
    Column("preferences", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("number", String(64)),
    Column("customer_id", String(128), ForeignKey("customers.id")),
    Column("locale", String(35)),
    Column("currency", String(3)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),  # open | canceled
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(128), ForeignKey("orders.id"), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("name", Text),
    Column("quantity", Integer, nullable=False),
    Index("ix_order_lines_sku", "sku"),
)

events = Table(
    "events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("source", String(512), nullable=False),
    Column("ce_id", String(512), nullable=False),
    Column("type", String(128), nullable=False),
    Column("subject", String(512)),
    Column("time", UTCDateTime),
    Column("data", JSONType, nullable=False),
    Column("order_id", String(128)),
    Column("customer_id", String(128)),
    Column("received_at", UTCDateTime, nullable=False),
    # The CloudEvents identity: a redelivered event is the same event.
    UniqueConstraint("source", "ce_id", name="uq_events_source_ce_id"),
    Index("ix_events_order_id", "order_id"),
    Index("ix_events_received_at", "received_at"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("event_id", String(32), ForeignKey("events.id"), nullable=False),
    Column("rule_id", String(128), nullable=False),
    Column("kind", String(128), nullable=False),
    Column("category", String(64), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("customer_id", String(128)),
    Column("order_id", String(128)),
    Column("recipient", String(512)),
    Column("locale", String(35)),
    Column("time_zone", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("dedupe_key", String(512), nullable=False),
    Column("rendered", JSONType),
    # Held notifications of one group (a shipment, for one recipient and channel) are
    # superseded by a newer one; digest items wait under a digest key for their digest.
    Column("group_key", String(64)),
    Column("digest_key", String(256)),
    Column("parent_id", String(32)),
    Column("scheduled_for", UTCDateTime),
    # Render context beyond the event (the product a backorder is about, digest items).
    Column("extra", JSONType),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("provider", String(64)),  # the provider that took the message
    Column("provider_message_id", String(512)),  # its id there: how receipts find it
    Column("delivered_at", UTCDateTime),
    Column("acknowledged_at", UTCDateTime),  # read, opened or clicked
    # Deferred SMS and push about one order that fall due together go as one message.
    Column("merge_key", String(64)),
    UniqueConstraint("dedupe_key", name="uq_notifications_dedupe_key"),
    Index("ix_notifications_event_id", "event_id"),
    Index("ix_notifications_order_id", "order_id"),
    Index("ix_notifications_status", "status"),
    Index("ix_notifications_group_key", "group_key"),
    Index("ix_notifications_digest_key", "digest_key"),
    Index("ix_notifications_parent_id", "parent_id"),
    Index("ix_notifications_provider_message_id", "provider_message_id"),
    Index("ix_notifications_sent_at", "sent_at"),
    Index("ix_notifications_merge_key", "merge_key"),
)

delivery_jobs = Table(
    "delivery_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("notification_id", String(32), ForeignKey("notifications.id"), nullable=False),
    Column("channel", String(32), nullable=False),
    # 0 critical, 1 transactional, 2 bulk: lower is claimed first.
    Column("lane", SmallInteger, nullable=False),
    # queued | leased | sent | dead
    Column("status", String(16), nullable=False),
    # When the job is next due. While leased it holds the lease expiry, so one
    # index answers "what is due now", fresh work and abandoned leases alike.
    Column("run_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("worker_id", String(64)),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("notification_id", name="uq_delivery_jobs_notification_id"),
    Index(
        "ix_delivery_jobs_due",
        "lane",
        "run_at",
        sqlite_where=text("status IN ('queued', 'leased')"),
        postgresql_where=text("status IN ('queued', 'leased')"),
    ),
    Index("ix_delivery_jobs_status", "status"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("job_id", String(32), ForeignKey("delivery_jobs.id"), nullable=False),
    Column("notification_id", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(64)),
    Column("provider", String(64)),
    Column("outcome", String(16), nullable=False),  # sent | transient | permanent
    Column("error", Text),
    Column("provider_message_id", String(512)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Index("ix_delivery_attempts_job_id", "job_id"),
)

inbox_messages = Table(
    "inbox_messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("notification_id", String(32), ForeignKey("notifications.id"), nullable=False),
    Column("kind", String(128), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("read_at", UTCDateTime),
    UniqueConstraint("notification_id", name="uq_inbox_messages_notification_id"),
    Index("ix_inbox_messages_customer_id", "customer_id", "created_at"),
)

rejects = Table(
    "rejects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("source", String(512)),
    Column("channel", String(64), nullable=False),  # how it came in: api, import, ...
    Column("code", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("field", String(256)),
    Column("content_type", String(128)),
    Column("headers", JSONType, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open | replayed
    Column("received_at", UTCDateTime, nullable=False),
    Column("replayed_at", UTCDateTime),
    Index("ix_rejects_status", "status", "received_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", JSONType, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    UniqueConstraint("prefix", name="uq_api_keys_prefix"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject_type", String(64), nullable=False),
    Column("subject_id", String(128), nullable=False),
    # Canonical JSON text, not JSONB: the hash covers these exact characters.
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_subject", "subject_type", "subject_id"),
)

# One row: the newest link of the audit chain. Appending locks it, which orders
# concurrent writers on PostgreSQL; SQLite writers are serialized anyway.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
)


# The furthest a shipment has got, so a late, lower-ranked scan cannot be sent after it.
shipments = Table(
    "shipments",
    metadata,
    Column("key", String(256), primary_key=True),  # tracking number, else shipment id
    Column("order_id", String(128)),
    Column("rank", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The source's own id of the parcel (a Shopify fulfillment), for scans that lack the
    # tracking number.
    Column("shipment_id", String(256)),
    Index("ix_shipments_shipment_id", "shipment_id"),
)

# Which order a return belongs to, for sources whose later return events omit it.
returns = Table(
    "returns",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("order_id", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

stock_levels = Table(
    "stock_levels",
    metadata,
    Column("sku", String(128), primary_key=True),
    Column("location", String(128), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Per SKU: where stock stands and what customers were last told about it.
sku_states = Table(
    "sku_states",
    metadata,
    Column("sku", String(128), primary_key=True),
    Column("state", String(16), nullable=False),  # in_stock | backordered
    Column("restock_eta", String(10)),
    Column("notified_eta", String(10)),
    Column("updated_at", UTCDateTime, nullable=False),
)

stock_subscriptions = Table(
    "stock_subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sku", String(128), nullable=False),
    Column("customer_id", String(128), ForeignKey("customers.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("notified_at", UTCDateTime),
    UniqueConstraint("sku", "customer_id", name="uq_stock_subscriptions_sku"),
    Index("ix_stock_subscriptions_waiting", "sku", "created_at"),
)

# Work the engine itself schedules (digests, back-in-stock waves), claimed like jobs.
timers = Table(
    "timers",
    metadata,
    Column("key", String(256), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("status", String(16), nullable=False),  # pending | leased | done
    Column("attempts", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_timers_due", "status", "due_at"),
)


# A customer's push endpoints: FCM registration tokens and Web Push subscriptions.
devices = Table(
    "devices",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(128), ForeignKey("customers.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # fcm | webpush
    Column("address", Text, nullable=False),  # the token, or the subscription JSON
    Column("address_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),  # the provider said it is gone, or the customer did
    Column("removed_reason", Text),
    UniqueConstraint("customer_id", "address_hash", name="uq_devices_customer_id"),
)

# Addresses nothing more is sent to: hard bounces, complaints; SMS STOP (non-critical).
suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("address", String(512), primary_key=True),
    Column("reason", String(32), nullable=False),  # hard_bounce | complaint | stop
    Column("detail", Text),
    Column("source", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Every status callback a provider sent about a message, as received.
receipts = Table(
    "receipts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("provider_message_id", String(512)),
    Column("notification_id", String(32)),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_receipts_notification_id", "notification_id"),
)


# --- Billing: payments, refunds, the double-entry ledger ----------------------------------

# A captured payment. ``refunded`` is what its refunds hold (in flight or succeeded); the
# database refuses to let it pass ``captured``, whatever the application believes.
payments = Table(
    "payments",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("store", String(64), nullable=False),
    Column("order_id", String(128)),
    Column("customer_id", String(128)),
    Column("gateway", String(32), nullable=False),
    Column("gateway_payment_id", String(255)),
    Column("currency", String(3), nullable=False),
    Column("captured", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("method", String(32)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("captured >= 0", name="captured_not_negative"),
    CheckConstraint("refunded >= 0 AND refunded <= captured", name="refunded_within_captured"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("payment_id", String(128), ForeignKey("payments.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # requested | pending_approval | approved | rejected | submitted | authorized |
    # succeeded | failed | canceled | reversed
    Column("status", String(32), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("reason", Text),
    Column("lines", JSONType),
    Column("idempotency_key", String(255), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("approvals", JSONType, nullable=False),  # [{"actor", "at"}]
    # How many distinct approvers the policy asked for when the refund was requested.
    Column("approvals_needed", Integer, nullable=False),
    Column("decided_reason", Text),
    Column("gateway_refund_id", String(255)),
    Column("failure_reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # When each milestone was reached, for approval and time-to-refund analytics.
    Column("approved_at", UTCDateTime),
    Column("authorized_at", UTCDateTime),
    Column("succeeded_at", UTCDateTime),
    CheckConstraint("amount > 0", name="amount_positive"),
    UniqueConstraint("requested_by", "idempotency_key", name="uq_refunds_requested_by"),
    Index("ix_refunds_payment_id", "payment_id"),
    Index("ix_refunds_status", "status"),
)

# One journal transaction: its lines sum to zero per currency.
ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    # capture | refund_authorized | refund_succeeded | refund_released | refund_reversed |
    # fee | write_off (tidings.billing.ledger)
    Column("kind", String(32), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("description", Text),
    Index("ix_ledger_transactions_reference", "reference"),
)

# Amounts in minor units: debits positive, credits negative.
ledger_lines = Table(
    "ledger_lines",
    metadata,
    Column("id", _BigIntId, primary_key=True, autoincrement=True),
    Column("transaction_id", String(32), ForeignKey("ledger_transactions.id"), nullable=False),
    Column("account", String(128), nullable=False),  # store:currency:name
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("ix_ledger_lines_transaction_id", "transaction_id"),
    Index("ix_ledger_lines_account", "account"),
)

# --- Billing: payment retries (dunning) -----------------------------------------------------

# A named retry policy (tidings.billing.retry_policy). A workflow keeps a copy of the
# policy it was opened under, so editing one never changes a schedule already promised.
payment_retry_policies = Table(
    "payment_retry_policies",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("policy", JSONType, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One failed payment being recovered. Open states: failed | retry_scheduled | retrying;
# final: recovered | exhausted | canceled (tidings.billing.retries).
payment_retry_workflows = Table(
    "payment_retry_workflows",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("store", String(64), nullable=False),
    Column("payment_id", String(128), nullable=False),
    Column("order_id", String(128)),
    Column("customer_id", String(128)),
    Column("gateway", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("policy", JSONType, nullable=False),
    # Attempts this workflow made; the failure that opened it is attempt 0.
    Column("attempts", Integer, nullable=False),
    Column("network", String(32)),
    Column("decline_code", String(64)),
    Column("next_attempt_at", UTCDateTime),
    # What happened at the end: cancel_order | mark_uncollectible | escalate, or why it
    # stopped (order canceled, refund or dispute opened, ...).
    Column("final_action", String(32)),
    Column("closed_reason", Text),
    Column("opened_by_event", String(32)),
    Column("recovered_amount", BigInteger),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    Index("ix_payment_retry_workflows_due", "status", "next_attempt_at"),
    Index("ix_payment_retry_workflows_order_id", "order_id"),
    # At most one open workflow per payment: a repeated failure report joins it.
    Index(
        "uq_payment_retry_workflows_open_payment",
        "payment_id",
        unique=True,
        sqlite_where=text("status IN ('failed', 'retry_scheduled', 'retrying')"),
        postgresql_where=text("status IN ('failed', 'retry_scheduled', 'retrying')"),
    ),
)

# Every attempt with its outcome; number 0 is the failure reported by the source.
payment_retry_attempts = Table(
    "payment_retry_attempts",
    metadata,
    Column("id", _BigIntId, primary_key=True, autoincrement=True),
    Column("workflow_id", String(32), ForeignKey("payment_retry_workflows.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("gateway", String(32), nullable=False),
    # approved | declined | unknown (timed out: asked again with the same key)
    Column("outcome", String(16), nullable=False),
    Column("decline_code", String(64)),
    Column("category", String(8)),  # hard | soft
    Column("network", String(32)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    UniqueConstraint("workflow_id", "number", name="uq_payment_retry_attempts_number"),
)

# Stored events billing acts on (payment.captured, payment.failed, order.canceled, ...),
# queued by intake in the transaction that stores them, like delivery jobs: none is
# missed, and marking one applied in the transaction that acts on it makes it count once.
billing_inbox = Table(
    "billing_inbox",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("applied_at", UTCDateTime),
    # What came of it: "opened rw_...", "stopped 1", "refused: invalid_amount", ...
    Column("outcome", String(64)),
    # Failed attempts to act on it (not refusals): each waits longer before the next.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("retry_at", UTCDateTime),
    Column("last_error", String(500)),
    Index(
        "ix_billing_inbox_pending",
        "queued_at",
        sqlite_where=text("applied_at IS NULL"),
        postgresql_where=text("applied_at IS NULL"),
    ),
)
