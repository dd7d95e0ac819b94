"""Every API route names the scope it needs; a request without a matching key is refused."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from tidings.api.keys import Principal
from tidings.api.problems import ApiProblem


def require(scope: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiProblem(
                401,
                "missing_credentials",
                "Send an API key as 'Authorization: Bearer <key>'. "
                "Create one with `tidings apikey create`.",
                headers={"WWW-Authenticate": 'Bearer realm="tidings"'},
            )
        principal: Principal | None = request.app.state.runtime.keys.verify(token.strip())
        if principal is None:
            raise ApiProblem(
                401,
                "invalid_credentials",
                "This API key is unknown or revoked.",
                headers={"WWW-Authenticate": 'Bearer realm="tidings", error="invalid_token"'},
            )
        if not principal.allows(scope):
            raise ApiProblem(
                403,
                "insufficient_scope",
                f"This API key lacks the '{scope}' scope. Use a key that has it.",
                required_scope=scope,
            )
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def scope(name: str) -> Principal:
    """Use as ``principal: Principal = scope("events:write")`` in a route signature."""
    result: Principal = Depends(require(name))
    return result
