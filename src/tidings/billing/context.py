"""What the billing edges (API, scheduled submission and retries) get from the wiring: the
store, the gateways, the approval policy and the way billing's events reach intake."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.gateways.base import Gateway
from tidings.billing.gateways.routing import GatewayRouter
from tidings.billing.retry_repository import Workflow
from tidings.billing.retry_service import RetryContext
from tidings.billing.service import Emitter


@dataclass(frozen=True)
class Billing:
    store: str
    gateways: GatewayRouter
    approvals: ApprovalPolicy
    emitter: Emitter
    # Where customers update their card; {order_id} and {payment_id} are filled in.
    update_payment_url: str | None = None

    @property
    def retries(self) -> RetryContext:
        first = self.gateways.gateways[self.gateways.names[0]]
        return RetryContext(
            store=self.store,
            emitter=self.emitter,
            update_payment_url=self.update_payment_url,
            declines=first.declines,
        )

    def retry_gateway(self, workflow: Workflow, number: int) -> Gateway | None:
        """The gateway that charges attempt ``number``: the one that took the payment,
        or the route's secondary when the workflow's policy allows it."""
        return self.gateways.for_retry(
            gateway=workflow.gateway,
            store=workflow.store,
            currency=workflow.currency,
            last_decline=workflow.decline_code if number > 1 else None,
            secondary_allowed=bool(workflow.policy.get("use_secondary_gateway")),
        )
