"""What the billing edges (API, scheduled submission and retries) get from the wiring: the
store, the gateway, the approval policy and the way billing's events reach intake."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.gateways.base import Gateway
from tidings.billing.retry_repository import Workflow
from tidings.billing.retry_service import RetryContext
from tidings.billing.service import Emitter


@dataclass(frozen=True)
class Billing:
    store: str
    gateway: Gateway
    approvals: ApprovalPolicy
    emitter: Emitter
    # Where customers update their card; {order_id} and {payment_id} are filled in.
    update_payment_url: str | None = None

    @property
    def retries(self) -> RetryContext:
        return RetryContext(
            store=self.store,
            emitter=self.emitter,
            update_payment_url=self.update_payment_url,
            declines=self.gateway.declines,
        )

    def retry_gateway(self, workflow: Workflow, number: int) -> Gateway | None:
        """The gateway that charges attempt ``number``: the one that took the payment."""
        return self.gateway if workflow.gateway == self.gateway.name else None
