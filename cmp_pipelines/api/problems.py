"""RFC 9457 problem details: every refusal names what was wrong, and never echoes a card number or key."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmp_pipelines.api.redact import redact_target
from cmp_pipelines.core.cards import mask_pans_in

MEDIA_TYPE = "application/problem+json"
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 415: "Unsupported media type", 422: "Invalid request", 500: "Internal error",
          503: "Service unavailable"}


class Problem(Exception):
    def __init__(self, status: int, detail: str, *, field: str | None = None, slug: str | None = None,
                 headers: dict | None = None, errors: list[dict] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, mask_pans_in(detail), field, headers
        self.slug = slug or {401: "unauthorized", 404: "not-found", 409: "conflict", 422: "validation-error"}.get(
            status, "error")
        self.errors = errors or ([{"field": field, "detail": self.detail}] if field else None)


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    body = {"type": f"/problems/{problem.slug}", "title": TITLES.get(problem.status, "Error"),
            "status": problem.status, "detail": problem.detail, "instance": redact_target(request.url.path)}
    if problem.field:
        body["field"] = problem.field
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


def _field(loc: tuple) -> str:
    where, *rest = loc or ("body",)
    if where == "header" and rest:
        return "-".join(part.capitalize() for part in str(rest[0]).split("-"))
    names = [str(part) for part in rest if not isinstance(part, int)]
    return ".".join(names) if names else str(where)


def _message(error: dict) -> str:
    """Pydantic's message, without the input (it could be a card number or a key)."""
    if error.get("type") == "missing":
        return "is required"
    if error.get("type") == "extra_forbidden":
        return "is not a field of this request"
    if error.get("type") == "json_invalid":
        return "the body is not valid JSON"
    return mask_pans_in(str(error.get("msg", "is invalid")).removeprefix("Value error, "))


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(tuple(e.get("loc", ()))), "detail": _message(e)} for e in exc.errors()]
    first = errors[0] if errors else {"field": "body", "detail": "is invalid"}
    detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
    return problem_response(Problem(422, detail, field=first["field"], errors=errors), request)


async def problem_handler(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc, request)


async def http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return problem_response(Problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)),
                            request)


async def busy_handler(request: Request, exc: Exception) -> JSONResponse:
    """The store cannot take the request now (PostgreSQL: every pooled connection in use): retry, nothing done."""
    return problem_response(Problem(503, str(exc), slug="store-busy", headers={"Retry-After": "1"}), request)


async def unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    logging.getLogger("cmp_pipelines.api").error("unexpected %s on %s %s: %s", type(exc).__name__, request.method,
                                                 redact_target(request.url.path), mask_pans_in(str(exc)))
    return problem_response(Problem(500, "unexpected error; the request was not completed", slug="internal"),
                            request)
