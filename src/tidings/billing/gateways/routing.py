"""Which gateway serves a payment: by name when the payment says, else by store and currency.

A payment remembers the gateway that took it (``payments.gateway``), and its refunds and
retries go back there: only that gateway knows the payment's id. Routes decide for
payments that name none, and say which gateway may take a retry instead:

    TIDINGS_BILLING_ROUTES="lumen/EUR=stripe>braintree, */USD=braintree, *=sandbox"

Each route is ``store/currency=primary`` with an optional ``>secondary``; ``*`` matches
any store or currency, and a bare ``*`` is ``*/*``. The most specific route wins:
store and currency, then store, then currency, then the catch-all.

A retry goes to the secondary gateway only when the workflow's policy allows it
(``use_secondary_gateway``) and the last decline was the gateway's or the network's
trouble rather than the card's (``GATEWAY_SIDE_DECLINES``): another acquirer may get
through where the first could not, while insufficient funds stay insufficient anywhere.
The secondary charges the same payment id, so it must reach the same card: a shared
vault or network token (the sandbox answers for any id that ends in a card token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tidings.billing.gateways.base import Gateway

WILDCARD = "*"

# Declines that say nothing about the card: worth trying through another gateway.
GATEWAY_SIDE_DECLINES = frozenset(
    {"processing_error", "issuer_not_available", "try_again_later", "reenter_transaction"}
)


class RoutingError(ValueError):
    """A route that cannot be read, or names a gateway that is not configured."""


@dataclass(frozen=True, slots=True)
class Route:
    store: str
    currency: str
    primary: str
    secondary: str | None = None

    def specificity(self) -> int:
        return (self.store != WILDCARD) * 2 + (self.currency != WILDCARD)

    def matches(self, store: str, currency: str) -> bool:
        return self.store in (WILDCARD, store) and self.currency in (WILDCARD, currency)


def parse_routes(text: str) -> list[Route]:
    """``store/currency=primary[>secondary]`` entries separated by commas."""
    routes: list[Route] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        where, equals, to = entry.partition("=")
        if not equals or not to.strip():
            raise RoutingError(f"route {entry!r}: expected store/currency=gateway")
        store, slash, currency = where.strip().partition("/")
        if not slash:
            if store != WILDCARD:
                raise RoutingError(f"route {entry!r}: expected store/currency before '='")
            currency = WILDCARD
        currency = currency.strip().upper() if currency.strip() != WILDCARD else WILDCARD
        if currency != WILDCARD and (len(currency) != 3 or not currency.isalpha()):
            raise RoutingError(f"route {entry!r}: {currency!r} is not an ISO 4217 code")
        primary, arrow, secondary = to.partition(">")
        if arrow and not secondary.strip():
            raise RoutingError(f"route {entry!r}: nothing after '>'")
        route = Route(
            store=store.strip() or WILDCARD,
            currency=currency,
            primary=primary.strip(),
            secondary=secondary.strip() or None,
        )
        if route.primary == route.secondary:
            raise RoutingError(f"route {entry!r}: the secondary is the primary")
        if any((r.store, r.currency) == (route.store, route.currency) for r in routes):
            raise RoutingError(f"route {entry!r}: {route.store}/{route.currency} routed twice")
        routes.append(route)
    return routes


class GatewayRouter:
    """The configured gateways, by name, and the routes between them."""

    def __init__(self, gateways: Iterable[Gateway], routes: Iterable[Route] = ()) -> None:
        self._gateways: dict[str, Gateway] = {}
        for gateway in gateways:
            if gateway.name in self._gateways:
                raise RoutingError(f"gateway {gateway.name!r} is configured twice")
            self._gateways[gateway.name] = gateway
        if not self._gateways:
            raise RoutingError("at least one payment gateway must be configured")
        self.routes = sorted(routes, key=Route.specificity, reverse=True)
        for route in self.routes:
            for name in filter(None, (route.primary, route.secondary)):
                if name not in self._gateways:
                    raise RoutingError(
                        f"route {route.store}/{route.currency} names gateway {name!r}, which "
                        f"is not configured (configured: {', '.join(self._gateways)})"
                    )

    @classmethod
    def single(cls, gateway: Gateway) -> GatewayRouter:
        return cls([gateway])

    @property
    def names(self) -> list[str]:
        return list(self._gateways)

    @property
    def gateways(self) -> Mapping[str, Gateway]:
        return dict(self._gateways)

    def named(self, name: str) -> Gateway | None:
        return self._gateways.get(name)

    def route(self, store: str, currency: str) -> Route:
        """The most specific route; without one, the first configured gateway alone."""
        for route in self.routes:
            if route.matches(store, currency.upper()):
                return route
        return Route(WILDCARD, WILDCARD, next(iter(self._gateways)))

    def for_payment(self, *, gateway: str | None, store: str, currency: str) -> Gateway | None:
        """The payment's own gateway when it names one, else the route's primary. None
        when the payment names a gateway that is not configured here."""
        if gateway and gateway != "unknown":
            return self._gateways.get(gateway)
        return self._gateways[self.route(store, currency).primary]

    def for_retry(
        self,
        *,
        gateway: str,
        store: str,
        currency: str,
        last_decline: str | None,
        secondary_allowed: bool,
    ) -> Gateway | None:
        """Where the next attempt at a failed payment goes; see the module docstring."""
        if secondary_allowed and last_decline in GATEWAY_SIDE_DECLINES:
            route = self.route(store, currency)
            if route.secondary is not None and route.secondary != gateway:
                return self._gateways[route.secondary]
        return self.for_payment(gateway=gateway, store=store, currency=currency)

    async def aclose(self) -> None:
        for gateway in self._gateways.values():
            await gateway.aclose()
