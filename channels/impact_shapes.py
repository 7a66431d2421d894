"""impact.com's shapes: the resources, the paging keys, the error envelope, JSON or XML answers.

Every answer is one of the models below dumped by alias, so what the OpenAPI document promises
is what is sent. impact answers XML unless the client asks for JSON (`Accept: application/json`,
or a `.json` suffix on the resource); XML has impact's `<ImpactRadiusResponse>` root, a list is
one element per entry inside its plural element, and the paging keys are that element's
attributes (`<Actions page="1" numpages="1" …>`).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

JSON_TYPE = "application/json"
XML_TYPE = "application/xml"
WANTS_JSON = "returnsd.wants_json"  # set on the request scope by the `.json` suffix
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Shape(BaseModel):
    """Base of impact's resources: fields by their impact names, extra keys refused."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class ErrorField(Shape):
    """One field's problem in an error envelope."""

    Field_: str = Field(alias="Field")
    Message: str


class ErrorEnvelope(Shape):
    """impact's error answer."""

    Status: str = Field(default="ERROR", description="Always ERROR")
    Message: str
    Errors: list[ErrorField] | None = None


class QueuedReply(Shape):
    """What PUT and DELETE …/Actions answer once the request is durably stored."""

    Status: str = Field(default="QUEUED", description="Always QUEUED")
    QueuedUri: str = Field(description="Where the submission's status is: …/APISubmissions/{id}")


class ApiSubmission(Shape):
    """A request submitted through the API and what became of it."""

    BatchId: str
    AccountId: str = Field(description="The AccountSID that submitted it")
    SubmissionDate: str
    CampaignId: str | None = None
    ActionTrackerId: str | None = None
    ActionId: str | None = None
    OrderId: str | None = None
    Payload: str = Field(description="The request's parameters as submitted")
    Type: str = Field(description="Modification (PUT) or Reversal (DELETE)")
    Status: str = Field(description="Queued, In Progress or Complete")
    CompletionDate: str | None = None
    ErrorType: str | None = Field(default=None, description="Validation or Contract Error")
    ErrorReason: str | None = Field(default=None, description="The error code, e.g. ACTION_LOCKED")
    ErrorMessage: str | None = None
    Uri: str


class Action(Shape):
    """An action (a conversion) of a campaign."""

    Id: str
    CampaignId: str
    CampaignName: str | None = None
    ActionTrackerId: str
    ActionTrackerName: str | None = None
    EventCode: str | None = None
    MediaPartnerId: str
    State: str = Field(description="PENDING, APPROVED or REVERSED (returnsd's LOCKED: APPROVED)")
    Amount: str
    IntendedAmount: str
    DeltaAmount: str
    Payout: str
    IntendedPayout: str
    DeltaPayout: str
    Currency: str
    EventDate: str
    CreationDate: str
    LockingDate: str
    ReferringDate: str | None = None
    Oid: str
    CustomerStatus: str | None = None
    Uri: str


class ActionItem(Shape):
    """One item of an action."""

    ActionId: str
    Sku: str
    Category: str | None = None
    Quantity: str
    Amount: str
    OriginalQuantity: str
    OriginalAmount: str
    Uri: str


class ActionUpdate(Shape):
    """One change of an action, from the audit trail."""

    Id: str
    ActionId: str
    CampaignId: str
    ActionTrackerId: str | None = None
    Oid: str | None = None
    UpdateDate: str
    Type: str = Field(description="Modification, Reversal, Approval or Reset")
    DispositionCode: str | None = None
    State: str
    PreviousState: str
    Amount: str
    PreviousAmount: str
    DeltaAmount: str
    Payout: str
    PreviousPayout: str
    DeltaPayout: str
    Channel: str
    Uri: str


class FtpFileSubmission(Shape):
    """A file received through any channel (FTP, SFTP pull, mail, HTTP, drop folder)."""

    BatchId: str
    AccountId: str
    CampaignId: str
    SubmissionDate: str
    FileName: str
    Channel: str
    Type: str = Field(description="Modification (the types a returns file holds)")
    Status: str = Field(description="Queued, In Progress or Complete")
    TotalRecords: str
    TotalErrors: str
    CompletionDate: str | None = None
    ErrorsUri: str
    Uri: str


class ErrorDetail(Shape):
    """One line of a file that was not applied."""

    Line: str
    CampaignId: str
    ActionId: str | None = None
    ActionTrackerId: str | None = None
    OrderId: str | None = None
    Sku: str | None = None
    Status: str = Field(description="Validation or Contract Error")
    Reason: str = Field(description="The error code")
    Message: str | None = None


class Paging(Shape):
    """impact's paging keys (strings, as impact sends them)."""

    page: str = Field(alias="@page")
    numpages: str = Field(alias="@numpages")
    pagesize: str = Field(alias="@pagesize")
    total: str = Field(alias="@total")
    start: str = Field(alias="@start")
    end: str = Field(alias="@end")
    uri: str = Field(alias="@uri")
    firstpageuri: str = Field(alias="@firstpageuri")
    previouspageuri: str = Field(alias="@previouspageuri")
    nextpageuri: str = Field(alias="@nextpageuri")
    lastpageuri: str = Field(alias="@lastpageuri")


class ActionPage(Paging):
    """One page of actions."""

    Actions: list[Action]


class ActionItemPage(Paging):
    """One page of an action's items."""

    Items: list[ActionItem]


class ActionUpdatePage(Paging):
    """One page of action updates."""

    ActionUpdates: list[ActionUpdate]


class ApiSubmissionPage(Paging):
    """One page of API submissions."""

    APISubmissions: list[ApiSubmission]


class FtpFileSubmissionPage(Paging):
    """One page of file submissions."""

    FTPFileSubmissions: list[FtpFileSubmission]


class ErrorDetailPage(Paging):
    """One page of a file's line errors."""

    ErrorDetails: list[ErrorDetail]


def paging(request: Request, page: int, size: int, total: int, shown: int) -> dict[str, str]:
    """The `@…` keys of a page: numbers as strings, URIs relative like impact's."""
    pages = max(1, math.ceil(total / size)) if size else 1
    start = (page - 1) * size

    def uri(n: int) -> str:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "Page"]
        params.append(("Page", str(n)))
        return f"{request.url.path}?{urlencode(params)}"

    return {
        "@page": str(page),
        "@numpages": str(pages),
        "@pagesize": str(size),
        "@total": str(total),
        "@start": str(start),
        "@end": str(start + max(shown, 1) - 1 if shown else start),
        "@uri": uri(page),
        "@firstpageuri": uri(1),
        "@previouspageuri": uri(page - 1) if page > 1 else "",
        "@nextpageuri": uri(page + 1) if page < pages else "",
        "@lastpageuri": uri(pages),
    }


def wants_json(request: Request) -> bool:
    """JSON when the client asks for it (Accept or a `.json` suffix); XML otherwise, like impact."""
    if request.scope.get(WANTS_JSON):
        return True
    accept = request.headers.get("accept", "").lower()
    return JSON_TYPE in accept or "+json" in accept


def render(
    request: Request,
    doc: BaseModel,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    exclude_none: bool = False,
) -> Response:
    """The model as JSON or XML, by the request's Accept header."""
    data = doc.model_dump(by_alias=True, mode="json", exclude_none=exclude_none)
    if wants_json(request):
        from fastapi.responses import JSONResponse

        return JSONResponse(data, status_code=status, headers=dict(headers or {}))
    return Response(to_xml(data), status_code=status, media_type=XML_TYPE,
                    headers=dict(headers or {}))  # fmt: skip


def error(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """impact's error envelope with `message`."""
    return render(request, ErrorEnvelope(Message=message), status, headers, exclude_none=True)


def to_xml(data: Mapping[str, Any]) -> bytes:
    """A dumped model as impact's XML (`<ImpactRadiusResponse>` root)."""
    root = ET.Element("ImpactRadiusResponse")
    lists = [k for k, v in data.items() if isinstance(v, list)]
    attributes = {k[1:]: str(v) for k, v in data.items() if k.startswith("@")}
    for key, value in data.items():
        if key.startswith("@"):
            continue
        if key in lists and attributes:
            holder = ET.SubElement(root, key, attributes)
            _items(holder, _singular(key), value)
        else:
            _element(root, key, value)
    body: bytes = ET.tostring(root, encoding="utf-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _element(parent: ET.Element, key: str, value: Any) -> None:
    node = ET.SubElement(parent, key)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _element(node, k, v)
    elif isinstance(value, list):
        _items(node, _singular(key), value)
    elif value is not None:
        node.text = NOT_XML.sub("\ufffd", str(value))  # XML 1.0 cannot carry them


def _items(parent: ET.Element, name: str, values: Sequence[Any]) -> None:
    for value in values:
        _element(parent, name, value)


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


class BadRequest(Exception):
    """A request impact would refuse before queueing it (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def page_params(request: Request, default: int, smallest: int, largest: int) -> tuple[int, int]:
    """`Page` (from 1) and `PageSize` (impact's bounds for the resource), or BadRequest."""
    q = request.query_params
    try:
        page = int(q.get("Page") or 1)
        size = int(q.get("PageSize") or default)
    except ValueError:
        raise BadRequest(400, "Page and PageSize must be whole numbers") from None
    if page < 1 or page > 1_000_000:
        raise BadRequest(400, "Page must be between 1 and 1000000")
    if not smallest <= size <= largest:
        raise BadRequest(400, f"PageSize must be between {smallest} and {largest}")
    return page, size


def iso(moment: datetime | None) -> str | None:
    """A timestamp as impact writes it (ISO 8601 with its offset, seconds)."""
    return moment.isoformat(timespec="seconds") if moment else None


def moment_param(request: Request, name: str) -> datetime | None:
    """An ISO 8601 query parameter as an aware UTC time (no zone: UTC), or BadRequest."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(400, f"{name} must be an ISO 8601 date-time") from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
