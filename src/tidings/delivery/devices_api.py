"""Push device routes: ``/api/customers/{id}/devices`` to register, list and remove."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.auth import scope
from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem
from tidings.db.engine import read_transaction
from tidings.db.types import utcnow
from tidings.delivery import devices
from tidings.engine import addresses, repository

router = APIRouter(tags=["devices"])

REMOVED_BY_CUSTOMER = "removed by customer"


class DeviceIn(BaseModel):
    """``{"kind": "fcm", "token": ...}`` or ``{"kind": "webpush", "subscription": ...}``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fcm", "webpush"]
    token: str | None = Field(
        default=None, description="FCM: the registration token from getToken()."
    )
    subscription: dict[str, Any] | None = Field(
        default=None, description="Web Push: the browser's PushSubscription.toJSON()."
    )


class DeviceOut(BaseModel):
    id: str
    kind: str
    created_at: datetime
    hint: str = Field(
        description="Enough to tell devices apart without exposing the credential: the end "
        "of an FCM token, or the push service's host for Web Push."
    )


class DeviceList(BaseModel):
    customer_id: str
    devices: list[DeviceOut]


def _out(device: devices.Device) -> DeviceOut:
    if device.kind == "webpush":
        hint = urlsplit(addresses.push_endpoint_of(device.address)).hostname or ""
    else:
        hint = f"...{device.address[-6:]}"
    return DeviceOut(id=device.id, kind=device.kind, created_at=device.created_at, hint=hint)


def _address(body: DeviceIn) -> str:
    try:
        if body.kind == "fcm":
            if body.subscription is not None:
                raise addresses.AddressError(
                    "invalid_device",
                    "subscription",
                    "An FCM device has a token, not a "
                    'subscription; send {"kind": "webpush", ...} for a browser.',
                )
            return addresses.fcm_token(body.token)
        if body.token is not None:
            raise addresses.AddressError(
                "invalid_device",
                "token",
                "A Web Push device has a subscription, not a "
                'token; send {"kind": "fcm", ...} for an FCM registration token.',
            )
        return addresses.push_subscription(body.subscription)
    except addresses.AddressError as exc:
        raise ApiProblem(422, exc.code, exc.detail, field=exc.field) from exc


@router.post(
    "/api/customers/{customer_id}/devices",
    status_code=201,
    response_model=DeviceOut,
    responses={200: {"description": "This device was already registered.", "model": DeviceOut}},
)
def post_device(
    customer_id: str,
    body: DeviceIn,
    request: Request,
    principal: Principal = scope("customers:write"),
) -> JSONResponse:
    address = _address(body)
    with request.app.state.runtime.engine.begin() as conn:
        if repository.get_customer(conn, customer_id) is None:
            raise ApiProblem(404, "customer_not_found", f"No customer with id {customer_id}.")
        device, created = devices.register_device(
            conn,
            customer_id=customer_id,
            kind=body.kind,
            address=address,
            actor=principal.actor,
            now=utcnow(),
        )
    return JSONResponse(_out(device).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/api/customers/{customer_id}/devices", response_model=DeviceList)
def get_devices(
    customer_id: str, request: Request, _: Principal = scope("customers:read")
) -> DeviceList:
    with read_transaction(request.app.state.runtime.engine) as conn:
        if repository.get_customer(conn, customer_id) is None:
            raise ApiProblem(404, "customer_not_found", f"No customer with id {customer_id}.")
        active = devices.active_devices(conn, customer_id)
    return DeviceList(customer_id=customer_id, devices=[_out(d) for d in active])


@router.delete("/api/customers/{customer_id}/devices/{device_id}", status_code=204)
def delete_device(
    customer_id: str,
    device_id: str,
    request: Request,
    principal: Principal = scope("customers:write"),
) -> Response:
    """Nothing more is sent to the device. Removing it again changes nothing."""
    with request.app.state.runtime.engine.begin() as conn:
        removed = devices.remove_device_by_id(
            conn,
            customer_id=customer_id,
            device_id=device_id,
            reason=REMOVED_BY_CUSTOMER,
            actor=principal.actor,
            now=utcnow(),
        )
    if removed is None:
        raise ApiProblem(
            404, "device_not_found", f"Customer {customer_id} has no device {device_id}."
        )
    return Response(status_code=204)
