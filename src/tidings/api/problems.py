"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.field = field
        self.headers = headers
        self.extra = extra


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    field: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    # RFC 9457 3.1: type is a URI reference naming the problem type; a relative one
    # resolves against the API's own documentation under /problems/.
    body: dict[str, Any] = {
        "type": f"/problems/{code.replace('_', '-')}",
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field:
        body["field"] = field
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(problem: ApiProblem) -> JSONResponse:
    body = problem_body(
        problem.status,
        problem.code,
        problem.detail,
        title=problem.title,
        field=problem.field,
        **problem.extra,
    )
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


async def handle_api_problem(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(cast(ApiProblem, exc))


async def handle_validation(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return problem_response(
        ApiProblem(422, "invalid_request", f"{where}: {first.get('msg')}", field=where or None)
    )


async def handle_http(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem_response(
        ApiProblem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    )
