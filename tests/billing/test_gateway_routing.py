"""Routes between gateways: which one serves a payment, and where a retry may go."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tidings.billing.gateways.braintree import BraintreeGateway
from tidings.billing.gateways.configured import configured_gateways
from tidings.billing.gateways.routing import GatewayRouter, Route, RoutingError, parse_routes
from tidings.billing.gateways.sandbox import SandboxGateway
from tidings.billing.gateways.stripe_gateway import StripeGateway
from tidings.config import Settings


class Named(SandboxGateway):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def router(routes: str) -> GatewayRouter:
    named = [Named("stripe"), Named("braintree"), Named("sandbox")]
    return GatewayRouter(named, parse_routes(routes))


def test_routes_read_store_currency_primary_and_secondary() -> None:
    assert parse_routes("lumen/eur=stripe>braintree, */USD=braintree, *=sandbox") == [
        Route("lumen", "EUR", "stripe", "braintree"),
        Route("*", "USD", "braintree"),
        Route("*", "*", "sandbox"),
    ]
    assert parse_routes("  ") == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("lumen=stripe", "store/currency"),
        ("lumen/EUR", "store/currency=gateway"),
        ("lumen/EURO=stripe", "ISO 4217"),
        ("lumen/EUR=stripe>", "nothing after"),
        ("lumen/EUR=stripe>stripe", "secondary is the primary"),
        ("lumen/EUR=stripe, lumen/eur=braintree", "routed twice"),
    ],
)
def test_a_route_that_cannot_be_read_says_why(text: str, complaint: str) -> None:
    with pytest.raises(RoutingError, match=complaint):
        parse_routes(text)


def test_the_most_specific_route_wins() -> None:
    gateways = router("*=sandbox, */EUR=braintree, lumen/*=stripe, lumen/USD=sandbox>stripe")
    assert gateways.route("lumen", "usd").primary == "sandbox"
    assert gateways.route("lumen", "EUR").primary == "stripe"
    assert gateways.route("other", "EUR").primary == "braintree"
    assert gateways.route("other", "GBP").primary == "sandbox"


def test_without_routes_the_first_gateway_serves_everything() -> None:
    gateways = router("")
    assert gateways.route("lumen", "EUR") == Route("*", "*", "stripe")


def test_a_payment_goes_back_to_its_own_gateway_and_unnamed_ones_follow_the_route() -> None:
    gateways = router("*/EUR=braintree")
    own = gateways.for_payment(gateway="stripe", store="lumen", currency="EUR")
    routed = gateways.for_payment(gateway="unknown", store="lumen", currency="EUR")
    missing = gateways.for_payment(gateway="adyen", store="lumen", currency="EUR")
    assert (own and own.name, routed and routed.name, missing) == ("stripe", "braintree", None)


@pytest.mark.parametrize(
    ("last_decline", "allowed", "expected"),
    [
        ("processing_error", True, "braintree"),
        ("issuer_not_available", True, "braintree"),
        ("insufficient_funds", True, "stripe"),
        ("processing_error", False, "stripe"),
        (None, True, "stripe"),
    ],
)
def test_a_retry_goes_to_the_secondary_only_for_gateway_side_declines_when_allowed(
    last_decline: str | None, allowed: bool, expected: str
) -> None:
    gateways = router("lumen/EUR=stripe>braintree")
    chosen = gateways.for_retry(
        gateway="stripe",
        store="lumen",
        currency="EUR",
        last_decline=last_decline,
        secondary_allowed=allowed,
    )
    assert chosen is not None
    assert chosen.name == expected


def test_routes_may_only_name_configured_gateways() -> None:
    with pytest.raises(RoutingError, match="'braintree', which is not configured"):
        GatewayRouter([Named("stripe")], parse_routes("*/EUR=stripe>braintree"))
    with pytest.raises(RoutingError, match="configured twice"):
        GatewayRouter([Named("stripe"), Named("stripe")])
    with pytest.raises(RoutingError, match="at least one"):
        GatewayRouter([])


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"billing_gateways": "paypal"}, "unknown gateway paypal"),
        ({"billing_gateways": "stripe"}, "TIDINGS_STRIPE_API_KEY"),
        ({"billing_gateways": "braintree", "braintree_public_key": "pk"}, "PRIVATE_KEY"),
        ({"billing_routes": "*/EUR=stripe"}, "not in TIDINGS_BILLING_GATEWAYS"),
        ({"billing_routes": "EUR=stripe"}, "TIDINGS_BILLING_ROUTES"),
    ],
)
def test_gateway_settings_are_refused_at_start(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(**env)  # type: ignore[arg-type]


def test_the_default_settings_configure_the_sandbox_alone() -> None:
    gateways = configured_gateways(Settings())
    assert gateways.names == ["sandbox"]
    assert isinstance(gateways.named("sandbox"), SandboxGateway)


def test_every_named_gateway_is_built_from_its_settings_in_order() -> None:
    settings = Settings(
        billing_gateways="stripe, braintree, sandbox",
        billing_routes="lumen/EUR=stripe>braintree, *=sandbox",
        stripe_api_key="sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # type: ignore[arg-type]
        braintree_public_key="pk_test",
        braintree_private_key="bt_private",  # type: ignore[arg-type]
    )
    gateways = configured_gateways(settings)
    assert gateways.names == ["stripe", "braintree", "sandbox"]
    assert isinstance(gateways.named("stripe"), StripeGateway)
    assert isinstance(gateways.named("braintree"), BraintreeGateway)
    assert gateways.route("lumen", "EUR") == Route("lumen", "EUR", "stripe", "braintree")
    assert gateways.route("other", "EUR").primary == "sandbox"
