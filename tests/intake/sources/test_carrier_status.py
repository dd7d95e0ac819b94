"""Carrier status tables: every AfterShip tag and EasyPost status, and the payload helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tidings.intake.sources.base import MappingError
from tidings.intake.sources.carrier_status import (
    AFTERSHIP_TAGS,
    EASYPOST_STATUSES,
    UnknownCarrierStatus,
    aftership_carrier_status,
    aftership_status,
    calendar_day,
    easypost_carrier_status,
    easypost_status,
    instant,
    json_object,
    text,
)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Pending", "pending"),
        ("InfoReceived", "info_received"),
        ("InTransit", "in_transit"),
        ("OutForDelivery", "out_for_delivery"),
        ("AttemptFail", "attempt_failed"),
        ("AvailableForPickup", "available_for_pickup"),
        ("Delivered", "delivered"),
        ("Exception", "exception"),
        ("Expired", "expired"),
    ],
)
def test_every_aftership_tag(tag: str, expected: str) -> None:
    assert aftership_status(tag) == expected


def test_the_aftership_table_holds_exactly_the_nine_documented_tags() -> None:
    assert set(AFTERSHIP_TAGS) == {
        "Pending",
        "InfoReceived",
        "InTransit",
        "OutForDelivery",
        "AttemptFail",
        "AvailableForPickup",
        "Delivered",
        "Exception",
        "Expired",
    }


@pytest.mark.parametrize(
    ("tag", "subtag", "expected"),
    [
        ("Exception", "Exception_010", "return_to_sender"),  # Returning to sender
        ("Exception", "Exception_011", "return_to_sender"),  # Returned to sender
        ("Exception", "Exception_001", "exception"),
        ("Exception", "Exception_003", "exception"),  # Customer refused delivery
        ("Exception", "Exception_012", "exception"),  # Shipment damage
        ("Exception", "Exception_013", "exception"),  # Shipment lost
        ("Exception", None, "exception"),
        ("Delivered", "Delivered_001", "delivered"),
        ("Delivered", "Delivered_002", "delivered"),  # Picked up by the customer
        ("InTransit", "InTransit_002", "in_transit"),
        ("AttemptFail", "AttemptFail_001", "attempt_failed"),
        ("OutForDelivery", "OutForDelivery_001", "out_for_delivery"),
        ("InfoReceived", "InfoReceived_001", "info_received"),
        ("Expired", "Expired_001", "expired"),
    ],
)
def test_aftership_subtags_refine_only_exceptions(
    tag: str, subtag: str | None, expected: str
) -> None:
    assert aftership_status(tag, subtag) == expected


def test_unknown_aftership_tag_is_refused() -> None:
    with pytest.raises(UnknownCarrierStatus, match="Teleported"):
        aftership_status("Teleported", "Teleported_001")
    with pytest.raises(UnknownCarrierStatus):
        aftership_status("in_transit")  # EasyPost's wording is not AfterShip's


def test_aftership_carrier_status_keeps_the_subtag() -> None:
    assert aftership_carrier_status("InTransit", "InTransit_002") == "InTransit_002"
    assert aftership_carrier_status("Pending", None) == "Pending"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("unknown", "pending"),
        ("pre_transit", "info_received"),
        ("in_transit", "in_transit"),
        ("out_for_delivery", "out_for_delivery"),
        ("available_for_pickup", "available_for_pickup"),
        ("delivered", "delivered"),
        ("return_to_sender", "return_to_sender"),
        ("failure", "exception"),
        ("error", "exception"),
        ("cancelled", "canceled"),
    ],
)
def test_every_easypost_status(status: str, expected: str) -> None:
    assert easypost_status(status) == expected


def test_the_easypost_table_holds_exactly_the_ten_documented_statuses() -> None:
    assert set(EASYPOST_STATUSES) == {
        "unknown",
        "pre_transit",
        "in_transit",
        "out_for_delivery",
        "delivered",
        "available_for_pickup",
        "return_to_sender",
        "failure",
        "cancelled",
        "error",
    }


def test_easypost_status_detail_is_kept_not_mapped() -> None:
    assert easypost_status("in_transit", "arrived_at_destination") == "in_transit"
    assert easypost_status("delivered", "arrived_at_destination") == "delivered"
    assert easypost_carrier_status("in_transit", "arrived_at_facility") == (
        "in_transit:arrived_at_facility"
    )
    assert easypost_carrier_status("delivered", None) == "delivered"


def test_unknown_easypost_status_is_refused() -> None:
    with pytest.raises(UnknownCarrierStatus, match="lost_in_space"):
        easypost_status("lost_in_space")
    with pytest.raises(UnknownCarrierStatus):
        easypost_status("canceled")  # EasyPost spells it "cancelled"


def test_instant_needs_an_offset() -> None:
    assert instant("2026-11-21T14:02:00+01:00") == datetime(
        2026, 11, 21, 14, 2, tzinfo=timezone(timedelta(hours=1))
    )
    assert instant("2026-11-21T14:48:00Z") == datetime(2026, 11, 21, 14, 48, tzinfo=UTC)
    assert instant("2026-11-21T14:02:00") is None  # a local time names no instant
    assert instant("yesterday") is None
    assert instant(None) is None
    assert instant(1795269911) is None


def test_calendar_day_reads_dates_and_date_times() -> None:
    assert calendar_day("2026-11-24") == "2026-11-24"
    assert calendar_day("2026-11-24T23:30:00Z") == "2026-11-24"
    assert calendar_day("2026-11-24T00:00:00") == "2026-11-24"
    assert calendar_day("24/11/2026") is None
    assert calendar_day("") is None
    assert calendar_day(None) is None


def test_text_reads_strings_and_integers_only() -> None:
    assert text(" 1042 ") == "1042"
    assert text(58997314) == "58997314"
    assert text("") is None
    assert text("   ") is None
    assert text(True) is None
    assert text(None) is None
    assert text(12.5) is None


def test_json_object_refuses_what_is_not_an_object() -> None:
    assert json_object(b'{"a": 1}', provider="X") == {"a": 1}
    with pytest.raises(MappingError) as not_json:
        json_object(b"{", provider="AfterShip")
    assert not_json.value.code == "invalid_json"
    assert "AfterShip" in not_json.value.detail
    with pytest.raises(MappingError) as a_list:
        json_object(b"[1, 2]", provider="X")
    assert a_list.value.code == "invalid_payload"
