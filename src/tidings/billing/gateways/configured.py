"""The gateways ``TIDINGS_BILLING_GATEWAYS`` names, built from their settings, and routed."""

from __future__ import annotations

from tidings.billing.gateways.base import Gateway
from tidings.billing.gateways.routing import GatewayRouter, parse_routes
from tidings.billing.gateways.sandbox import Recorded, SandboxGateway
from tidings.config import Settings, provider_names, required_setting


def configured_gateways(
    settings: Settings, *, timeout: float = 10.0, recorded: Recorded | None = None
) -> GatewayRouter:
    """Every named gateway, in order (settings have checked each has its keys).
    ``recorded``: the store's sandbox captures, which the sandbox then answers for."""
    built: list[Gateway] = []
    for name in provider_names(settings.billing_gateways):
        if name == "sandbox":
            built.append(SandboxGateway(recorded=recorded))
        elif name == "stripe":
            from tidings.billing.gateways.stripe_gateway import StripeGateway

            built.append(
                StripeGateway(
                    required_setting(settings.stripe_api_key, "STRIPE_API_KEY"),
                    api_base=settings.stripe_api_url,
                    timeout=timeout,
                )
            )
        elif name == "braintree":
            from tidings.billing.gateways.braintree import BraintreeGateway

            built.append(
                BraintreeGateway(
                    required_setting(settings.braintree_public_key, "BRAINTREE_PUBLIC_KEY"),
                    required_setting(settings.braintree_private_key, "BRAINTREE_PRIVATE_KEY"),
                    endpoint=settings.braintree_api_url,
                    timeout=timeout,
                )
            )
        else:
            raise ValueError(f"unknown gateway {name!r}")
    return GatewayRouter(built, parse_routes(settings.billing_routes))
