"""OpenAPI pieces of the upload API: the reply model, the request body and the answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

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
        200: {"model": UploadReply, "description": "DUPLICATE: these bytes were processed before"},
        202: {"model": UploadReply, "description": "Stored durably and queued"},
        401: {"description": "Missing or invalid token for this campaign"},
        404: {"description": "No such campaign (told only to holders of a valid token)"},
        413: {"description": "Over the size limit"},
        415: {"description": "Content-Type or file extension not supported"},
        422: {"description": "Reserved file name"},
        503: {"description": "Too many uploads at once; retry later"},
        507: {"description": "Spool disk full; retry later"},
    }
