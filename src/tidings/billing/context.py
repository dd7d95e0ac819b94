"""What the billing edges (API, scheduled submission) get from the wiring: the store, the
gateway, the approval policy and the way billing's events reach intake."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.billing.approvals import ApprovalPolicy
from tidings.billing.gateways.base import Gateway
from tidings.billing.service import Emitter


@dataclass(frozen=True)
class Billing:
    store: str
    gateway: Gateway
    approvals: ApprovalPolicy
    emitter: Emitter
