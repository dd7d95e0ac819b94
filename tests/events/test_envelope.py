"""CloudEvents envelopes: structured and binary mode, the canonical event, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.events import CAMILLE, SOURCE, cloudevent, refund_authorized
from tidings.events.envelope import CanonicalEvent, EventError, parse_binary, parse_structured


def refused(document: Any) -> EventError:
    with pytest.raises(EventError) as info:
        parse_structured(document)
    return info.value


def refund_with(**data: Any) -> dict[str, Any]:
    document = refund_authorized("1001", id="refund-1001")
    document["data"] = {**document["data"], **data}
    return document


def test_a_valid_refund_becomes_a_canonical_event() -> None:
    event = parse_structured(refund_authorized("1001", id="refund-1001", customer=CAMILLE))
    assert isinstance(event, CanonicalEvent)
    assert event.source == SOURCE
    assert event.id == "refund-1001"
    assert event.type == "refund.authorized"
    assert event.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert event.data["order_id"] == "1001"
    assert event.data["refund_id"] == "re_1001"
    assert event.data["amount"] == 1250
    assert event.data["currency"] == "EUR"
    assert event.data["customer"]["email"] == "camille@example.fr"
    assert event.order_id == "1001"
    assert event.customer is not None
    assert event.customer["id"] == "cus_camille"


def test_the_subject_defaults_to_the_order() -> None:
    assert parse_structured(refund_authorized("1001")).subject == "order/1001"


def test_a_given_subject_is_kept() -> None:
    document = refund_authorized("1001", subject="refund/re_1001")
    assert parse_structured(document).subject == "refund/re_1001"


def test_an_event_without_an_order_has_no_default_subject() -> None:
    document = cloudevent("inventory.back_in_stock", {"sku": "LAMP-01", "available": 4})
    event = parse_structured(document)
    assert event.subject is None
    assert event.order_id is None
    assert event.customer is None


def test_time_is_optional() -> None:
    document = refund_authorized("1001")
    del document["time"]
    assert parse_structured(document).time is None


def test_a_time_offset_is_kept_as_the_same_instant() -> None:
    event = parse_structured(refund_authorized("1001", time="2026-11-21T11:00:00+01:00"))
    assert event.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert event.time is not None
    assert event.time.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
@pytest.mark.parametrize("value", ["missing", "", "   ", 7, None])
def test_a_missing_required_attribute_is_refused(name: str, value: Any) -> None:
    document = refund_authorized("1001")
    if value == "missing":
        del document[name]
    else:
        document[name] = value
    error = refused(document)
    assert error.code == "invalid_envelope"
    assert error.field == name


@pytest.mark.parametrize("document", [[], "event", None, 3])
def test_a_document_that_is_not_an_object_is_refused(document: Any) -> None:
    assert refused(document).code == "invalid_envelope"


def test_specversion_0_3_is_unsupported() -> None:
    error = refused(refund_authorized("1001", specversion="0.3"))
    assert (error.code, error.field) == ("unsupported_specversion", "specversion")


def test_an_unknown_event_type_is_refused_with_the_known_ones() -> None:
    error = refused(cloudevent("refund.teleported", {"order_id": "1"}))
    assert (error.code, error.field) == ("unknown_event_type", "type")
    assert "refund.teleported" in error.detail
    assert "refund.authorized" in error.detail


@pytest.mark.parametrize("amount", [12.5, 12.0, "1250", True, -1])
def test_money_must_be_non_negative_integer_minor_units(amount: Any) -> None:
    error = refused(refund_with(amount=amount))
    assert (error.code, error.field) == ("invalid_data", "data.amount")
    assert "data.amount" in error.detail


@pytest.mark.parametrize("currency", ["eur", "EURO", "XYZ", ""])
def test_the_currency_must_be_an_upper_case_iso_code(currency: str) -> None:
    error = refused(refund_with(currency=currency))
    assert (error.code, error.field) == ("invalid_data", "data.currency")


def test_a_bad_customer_time_zone_points_at_the_nested_field() -> None:
    error = refused(refund_with(customer={**CAMILLE, "time_zone": "Paris/France"}))
    assert (error.code, error.field) == ("invalid_data", "data.customer.time_zone")


def test_a_missing_data_field_is_refused() -> None:
    document = refund_authorized("1001")
    del document["data"]["refund_id"]
    error = refused(document)
    assert (error.code, error.field) == ("invalid_data", "data.refund_id")


@pytest.mark.parametrize("data", [None, [], "refund"])
def test_data_must_be_an_object(data: Any) -> None:
    document = refund_authorized("1001")
    document["data"] = data
    error = refused(document)
    assert (error.code, error.field) == ("invalid_data", "data")


@pytest.mark.parametrize(
    "time", ["2026-11-21T10:00:00", "2026-11-21", "yesterday", "2026-13-01T00:00:00Z"]
)
def test_a_time_without_an_offset_is_refused(time: str) -> None:
    error = refused(refund_authorized("1001", time=time))
    assert (error.code, error.field) == ("invalid_envelope", "time")


def test_a_non_string_subject_is_refused() -> None:
    error = refused(refund_authorized("1001", subject=42))
    assert (error.code, error.field) == ("invalid_envelope", "subject")


def test_extra_data_fields_are_kept() -> None:
    event = parse_structured(
        refund_with(
            loyalty_points=120,
            channel={"name": "web", "tags": ["a"]},
            customer={**CAMILLE, "tier": "gold"},
        )
    )
    assert event.data["loyalty_points"] == 120
    assert event.data["channel"] == {"name": "web", "tags": ["a"]}
    assert event.data["customer"]["tier"] == "gold"


def test_data_base64_is_unsupported() -> None:
    document = refund_authorized("1001")
    del document["data"]
    document["data_base64"] = "eyJhIjoxfQ=="
    error = refused(document)
    assert (error.code, error.field) == ("unsupported_data", "data_base64")


@pytest.mark.parametrize("content_type", ["text/xml", "application/octet-stream"])
def test_non_json_data_is_unsupported(content_type: str) -> None:
    error = refused(refund_authorized("1001", datacontenttype=content_type))
    assert (error.code, error.field) == ("unsupported_data", "datacontenttype")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/ld+json"]
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert parse_structured(refund_authorized("1001", datacontenttype=content_type)).id


@pytest.mark.parametrize("name", ["Partner", "trace-id", "x_y", "a" * 21])
def test_invalid_attribute_names_are_refused(name: str) -> None:
    document = refund_authorized("1001")
    document[name] = "v"
    error = refused(document)
    assert (error.code, error.field) == ("invalid_envelope", name)


def test_extension_attributes_with_valid_names_are_accepted() -> None:
    assert parse_structured(refund_authorized("1001", traceparent="00-abc", partition="7")).id


def binary_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "refund-1001",
        "ce-source": SOURCE,
        "ce-type": "refund.authorized",
        "ce-time": "2026-11-21T10:00:00Z",
        "content-type": "application/json",
    }
    headers.update(overrides)
    return headers


def refund_data() -> dict[str, Any]:
    data: dict[str, Any] = refund_authorized("1001")["data"]
    return data


def test_binary_mode_reads_ce_headers() -> None:
    event = parse_binary(binary_headers(), refund_data())
    assert (event.source, event.id, event.type) == (SOURCE, "refund-1001", "refund.authorized")
    assert event.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert event.subject == "order/1001"
    assert event.data["amount"] == 1250


def test_binary_mode_headers_are_case_insensitive() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "refund-1001",
        "CE-SOURCE": SOURCE,
        "ce-Type": "refund.authorized",
        "Ce-Subject": "refund/re_1001",
        "Ce-Time": "2026-11-21T12:00:00+02:00",
    }
    event = parse_binary(headers, refund_data())
    assert (event.source, event.id, event.type) == (SOURCE, "refund-1001", "refund.authorized")
    assert event.subject == "refund/re_1001"
    assert event.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_binary_mode_requires_each_attribute_header(name: str) -> None:
    headers = binary_headers()
    del headers[f"ce-{name}"]
    with pytest.raises(EventError) as info:
        parse_binary(headers, refund_data())
    assert (info.value.code, info.value.field) == ("invalid_envelope", f"ce-{name}")


def test_binary_mode_validates_data_like_structured_mode() -> None:
    with pytest.raises(EventError) as info:
        parse_binary(binary_headers(), {**refund_data(), "amount": 12.5})
    assert (info.value.code, info.value.field) == ("invalid_data", "data.amount")


def test_binary_mode_refuses_other_spec_versions() -> None:
    with pytest.raises(EventError) as info:
        parse_binary(binary_headers(**{"ce-specversion": "0.3"}), refund_data())
    assert info.value.code == "unsupported_specversion"


def test_binary_and_structured_mode_agree() -> None:
    structured = parse_structured(refund_authorized("1001", id="refund-1001"))
    binary = parse_binary(binary_headers(), refund_data())
    assert structured == binary


@pytest.mark.parametrize("name", ["id", "source", "subject"])
def test_over_long_identity_attributes_are_refused_clearly(name: str) -> None:
    document = (
        refund_authorized("1", **{name: "x" * 513})
        if name == "subject"
        else {**refund_authorized("1"), name: "x" * 513}
    )
    error = refused(document)
    assert (error.code, error.field) == ("invalid_envelope", name)
    assert "512" in error.detail
    accepted = parse_structured({**refund_authorized("1"), name: "y" * 512})
    assert getattr(accepted, name) == "y" * 512


@pytest.mark.parametrize("value", ["2026-11-21T10:00:00", "21/11/2026"])
def test_a_data_time_without_an_offset_is_refused_at_the_door(value: str) -> None:
    # A time without an offset names no instant; accepting it would only fail later,
    # when the message is written in the customer's zone.
    error = refused(refund_with(authorized_at=value))
    assert (error.code, error.field) == ("invalid_data", "data.authorized_at")
