"""The gateways ``TIDINGS_BILLING_GATEWAYS`` names, built from their settings, and routed."""

from __future__ import annotations

from pydantic import SecretStr

from tidings.billing.gateways.base import Gateway
from tidings.billing.gateways.routing import GatewayRouter, parse_routes
from tidings.billing.gateways.sandbox import Recorded, SandboxGateway
from tidings.config import Settings, provider_names


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
                    _needed(settings.stripe_api_key, "TIDINGS_STRIPE_API_KEY"),
                    api_base=settings.stripe_api_url,
                    timeout=timeout,
                )
            )
        elif name == "braintree":
            from tidings.billing.gateways.braintree import BraintreeGateway

            built.append(
                BraintreeGateway(
                    _needed(settings.braintree_public_key, "TIDINGS_BRAINTREE_PUBLIC_KEY"),
                    _needed(settings.braintree_private_key, "TIDINGS_BRAINTREE_PRIVATE_KEY"),
                    endpoint=settings.braintree_api_url,
                    timeout=timeout,
                )
            )
        else:
            raise ValueError(f"unknown gateway {name!r}")
    return GatewayRouter(built, parse_routes(settings.billing_routes))


def _needed(value: str | SecretStr | None, variable: str) -> str:
    if value is None:
        raise ValueError(f"{variable} is not set")
    return value.get_secret_value() if isinstance(value, SecretStr) else value
