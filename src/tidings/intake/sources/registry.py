"""The webhook sources Tidings understands, by route name."""

from __future__ import annotations

from tidings.intake.sources import aftership, easypost, returns, shopify, stripe
from tidings.intake.sources.base import SourceAdapter


def builtin_adapters() -> dict[str, SourceAdapter]:
    adapters: list[SourceAdapter] = [
        shopify.ADAPTER,
        stripe.ADAPTER,
        aftership.ADAPTER,
        easypost.ADAPTER,
        returns.ADAPTER,
    ]
    return {adapter.name: adapter for adapter in adapters}
