"""OpenAPI pieces of the upload API: reply models, the request body, the answers, the docs page."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from channels.http_body import RAW_TYPES


class UploadReply(BaseModel):
    """What an upload answers: the file's id, its status and where to look next."""

    file_id: str
    status: str
    status_url: str
    result_url: str
    duplicate_of: str | None = None


def upload_body() -> dict[str, Any]:
    """The upload's request body for OpenAPI: raw bytes of a supported type, or multipart `file`."""
    return {
        "requestBody": {
            "required": True,
            "description": "The raw bytes (with ?name=), or multipart/form-data field `file`.",
            "content": {
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in RAW_TYPES},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    }


def upload_responses() -> dict[int | str, dict[str, Any]]:
    """The upload's answers for OpenAPI."""
    return {
        200: {
            "model": UploadReply | CheckReply,
            "description": "DUPLICATE: these bytes were processed before; or the dry run's check",
        },
        202: {"model": UploadReply, "description": "Stored durably and queued"},
        401: {"description": "Missing or invalid token for this campaign"},
        404: {"description": "No such campaign (told only to holders of a valid token)"},
        413: {"description": "Over the size limit"},
        415: {"description": "Content-Type or file extension not supported"},
        422: {"description": "Reserved file name"},
        503: {"description": "Too many uploads at once; retry later"},
        507: {"description": "Spool disk full; retry later"},
    }


class FileError(BaseModel):
    """Why a file FAILED (nothing in it was applied)."""

    code: str
    message: str | None = None


class FileStatus(BaseModel):
    """A file's status and JSON summary: ids, sender, counts by status and error code, timings."""

    model_config = ConfigDict(extra="allow")  # the engine's summary may add keys (timings, …)

    file_id: str
    campaign: str
    channel: str
    name: str
    sender: str | None = None
    size: int
    sha256: str
    status: str = Field(description="QUEUED, PROCESSING, COMPLETE, FAILED or DUPLICATE")
    received_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: FileError | None = None
    duplicate_of: str | None = None
    counts: dict[str, Any] | None = Field(
        default=None, description="lines, applied, unchanged, errors, by_error_code"
    )
    status_url: str
    result_url: str


class FileList(BaseModel):
    """One page of a campaign's files, newest first (keyset: follow `next`)."""

    campaign: str
    files: list[FileStatus]
    limit: int
    cursor: str | None = Field(default=None, description="The cursor this page started after")
    next: str | None = Field(default=None, description="URL of the next page, if any")


class CheckReply(BaseModel):
    """A dry run: the file's summary and result CSV as a real run would give them."""

    dry_run: bool = True
    campaign: str
    name: str
    summary: dict[str, Any] = Field(description="counts by status and error code, warnings, …")
    result_csv: str = Field(description="The result CSV, line by line, nothing applied")


class Health(BaseModel):
    """Whether the daemon can take and process files."""

    status: str = Field(description="ok, or degraded when the database does not answer")
    database: str = Field(description="ok or unreachable")
    queued: int | None = None
    processing: int | None = None
    queue_capped: bool = Field(default=False, description="the counts stopped at their cap")
    channels: list[str] = Field(description="the channels running in this daemon")


DOCS_ASSETS = "/docs/assets"


def mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files of the swagger-ui-bundle package: nothing from outside."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    app.get("/docs", include_in_schema=False)(docs)
