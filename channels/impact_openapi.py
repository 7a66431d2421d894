"""The OpenAPI side of the impact-compatible routes: parameter types, answers, registration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query
from fastapi.responses import Response

from channels.impact_reads import ACTION_PAGES, FILE_PAGES
from channels.impact_shapes import ErrorEnvelope

BASE = "/Advertisers/{sid}"
TAGS: list[str | Enum] = ["impact.com-compatible API"]
Endpoint = Callable[..., Awaitable[Response]]  # a FastAPI endpoint (request, path and query)

XML_BODY = {"application/xml": {"schema": {"type": "string"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text, "content": XML_BODY}
    for code, text in (
        (400, "A parameter is malformed or not supported"),
        (401, "Invalid AccountSID or AuthToken"),
        (403, "The AuthToken may not act on that campaign"),
        (404, "No such resource"),
        (429, "Too many requests this hour (see X-RateLimit-Reset)"),
        (503, "Temporarily unavailable; retry"),
    )
}


def _ok(model: type, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": model,
            "description": f"{description} (XML unless Accept: application/json)",
            "content": XML_BODY,
        },
        **ERRORS,
    }


FORM_BODY = {
    "requestBody": {
        "required": False,
        "description": "The parameters, form-encoded (as impact's clients send them) or JSON",
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "application/json": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}
            },
        },
    }
}

SID = Annotated[str, Path(description="Your AccountSID")]
ACTION = Annotated[str, Path(description="The action's Id")]
Q = Annotated[str | None, Query()]
WHEN = Annotated[str | None, Query(description="ISO 8601 date-time (no zone: UTC)")]
STATE = Annotated[
    Literal["PENDING", "APPROVED", "REVERSED"] | None, Query(description="impact's states")
]
BATCH = Annotated[str, Path(description="The BatchId of …/APISubmissions/{BatchId}")]
PAGE = Annotated[int | None, Query(ge=1, le=1_000_000, description="From 1")]


ACTION_PAGE_SIZE = Annotated[
    int | None, Query(ge=ACTION_PAGES[1], le=ACTION_PAGES[2], description="Default 20000")
]
FILE_PAGE_SIZE = Annotated[
    int | None, Query(ge=FILE_PAGES[1], le=FILE_PAGES[2], description="Default 100")
]
SUBMISSION_PAGE_SIZE = Annotated[int | None, Query(ge=1, le=1000, description="Default 100")]


def add_route(
    app: FastAPI, method: str, path: str, endpoint: Endpoint, model: type, summary: str,
    body: bool = False,
) -> None:  # fmt: skip
    """Register one route under `/Advertisers/{sid}` with impact's answers in its description."""
    app.add_api_route(
        BASE + path, endpoint, methods=[method], summary=summary, tags=TAGS,
        responses=_ok(model, summary), openapi_extra=FORM_BODY if body else None,
        response_class=Response, name=f"impact {method} {path}",
    )  # fmt: skip
