"""The read side of the impact-compatible API: Actions, Items, ActionUpdates, file submissions.

Every listing reads through `ingest.queries` (the console's queries), restricted to the
campaigns the token may see; a row outside them is a 404, as for one that does not exist.
impact's rules for Actions and ActionUpdates hold: `StartDate`/`EndDate` both or neither, at
most 45 days apart and at most 3 years back, neither = the last 7 days; `PageSize` from 2,000
to 20,000 (default 20,000) and no more than 10 pages in all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from channels.impact_shapes import (
    Action,
    ActionItem,
    ActionItemPage,
    ActionPage,
    ActionUpdate,
    ActionUpdatePage,
    BadRequest,
    ErrorDetail,
    ErrorDetailPage,
    FtpFileSubmission,
    FtpFileSubmissionPage,
    error,
    iso,
    moment_param,
    page_params,
    paging,
    render,
)
from ingest import queries as q
from ingest.api_accounts import Principal
from ingest.config import Settings
from ingest.domain import money_text

MAX_SPAN = timedelta(days=45)
MAX_AGE = timedelta(days=3 * 365)
DEFAULT_SPAN = timedelta(days=7)
ACTION_PAGES = (20_000, 2_000, 20_000)  # default, smallest, largest PageSize
FILE_PAGES = (100, 1, 1_000)
MAX_PAGES = 10
STATES = {"PENDING": ("PENDING",), "APPROVED": ("APPROVED", "LOCKED"), "REVERSED": ("REVERSED",)}
UPDATE_TYPES = {"modify": "Modification", "reverse": "Reversal", "approve": "Approval",
                "reset": "Reset", "lock": "Lock"}  # fmt: skip
FILE_STATUS = {"QUEUED": "Queued", "PROCESSING": "In Progress"}  # any other: Complete
ERROR_STATUS = {"Validation": "Validation", "Contract": "Contract Error"}
T = TypeVar("T")


def signed(cents: int) -> str:
    """Cents as '-12.50' / '12.50' (deltas may be negative)."""
    return ("-" if cents < 0 else "") + money_text(abs(cents))


def impact_state(state: str) -> str:
    """returnsd's state as impact names it (a LOCKED action is APPROVED: it will pay)."""
    return "APPROVED" if state == "LOCKED" else state


def update_window(request: Request) -> q.Window:
    """`StartDate`/`EndDate` by impact's rules (see the module doc)."""
    start, end = moment_param(request, "StartDate"), moment_param(request, "EndDate")
    now = datetime.now(UTC)
    if (start is None) != (end is None):
        raise BadRequest(400, "StartDate and EndDate must be given together")
    if start is None or end is None:
        return q.Window(now - DEFAULT_SPAN, now)
    if end < start:
        raise BadRequest(400, "EndDate is before StartDate")
    if end - start > MAX_SPAN:
        raise BadRequest(400, "StartDate and EndDate cannot be more than 45 days apart")
    if start < now - MAX_AGE:
        raise BadRequest(400, "StartDate cannot be more than 3 years in the past")
    return q.Window(start, end)


def window(request: Request, start: str, end: str) -> q.Window:
    """A range from two optional parameters."""
    return q.Window(moment_param(request, start), moment_param(request, end))


def too_many(total: int, size: int) -> None:
    """impact refuses a listing of more than 10 pages."""
    if total > MAX_PAGES * size:
        raise BadRequest(
            400, f"{total}+ records are more than {MAX_PAGES} pages of {size}: narrow StartDate/"
            "EndDate or raise PageSize",
        )  # fmt: skip


class ImpactReads:
    """GET handlers over `ingest.queries`, for one server."""

    def __init__(self, settings: Settings, read: Callable[[], Any]) -> None:
        self.settings = settings
        self.read = read  # Store.read: a read-only connection
        self.names = {c.id: c.name for c in settings.campaigns}
        self.trackers = {et.id: et.name for c in settings.campaigns for et in c.event_types}

    async def _query(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.read() as conn:
                return fn(conn)

        return await run_in_threadpool(run)

    def _campaign(self, request: Request, who: Principal, required: bool) -> str | None:
        cid = request.query_params.get("CampaignId", "").strip() or None
        if cid is None and required:
            raise BadRequest(400, "CampaignId is required")
        if cid is not None and cid not in who.campaigns:
            raise BadRequest(403, "This AuthToken may not read that campaign")
        return cid

    def action_doc(self, who: Principal, a: q.ActionRow) -> Action:
        """An action in impact's shape."""
        return Action(
            Id=a.id, CampaignId=a.campaign_id, CampaignName=self.names.get(a.campaign_id),
            ActionTrackerId=str(a.event_type_id),
            ActionTrackerName=self.trackers.get(a.event_type_id), MediaPartnerId=a.partner_id,
            State=impact_state(a.state), Amount=money_text(a.amount),
            IntendedAmount=money_text(a.orig_amount), DeltaAmount=signed(a.amount - a.orig_amount),
            Payout=money_text(a.payout), IntendedPayout=money_text(a.orig_payout),
            DeltaPayout=signed(a.payout - a.orig_payout), Currency=a.currency,
            EventDate=iso(a.event_at) or "", CreationDate=iso(a.event_at) or "",
            LockingDate=iso(a.lock_at) or "", Oid=a.order_id, CustomerStatus=a.customer_status,
            Uri=f"/Advertisers/{who.sid}/Actions/{a.id}",
        )  # fmt: skip

    async def actions(self, request: Request, who: Principal) -> Response:
        """List a campaign's actions, newest first (CampaignId, State, date filters, paging)."""
        cid = self._campaign(request, who, required=True)
        assert cid is not None
        state = request.query_params.get("State", "").strip().upper()
        if state and state not in STATES:
            raise BadRequest(400, "State must be PENDING, APPROVED or REVERSED")
        page, size = page_params(request, *ACTION_PAGES)
        event = window(request, "ActionDateStart", "ActionDateEnd")
        f = q.ActionFilter(
            campaign_id=cid, states=STATES.get(state, ()), event_from=event.start,
            event_to=event.end + timedelta(microseconds=1) if event.end else None,
        )  # fmt: skip
        updated = update_window(request)
        locking = window(request, "LockingDateStart", "LockingDateEnd")
        rows, total = await self._query(
            lambda conn: q.page_actions(
                conn, f, updated=updated, locking=locking, offset=(page - 1) * size,
                limit=size, count_cap=MAX_PAGES * size,
            )
        )  # fmt: skip
        too_many(total, size)
        docs = [self.action_doc(who, a) for a, _ in rows]
        return render(request, ActionPage(**paging(request, page, size, total, len(docs)),
                                          Actions=docs))  # fmt: skip

    async def action(self, request: Request, who: Principal, action_id: str) -> Response:
        """One action."""
        found = await self._query(lambda conn: q.get_action(conn, action_id, who.campaigns))
        if found is None:
            return error(request, 404, f"No action {action_id}")
        return render(request, self.action_doc(who, found.action))

    async def items(self, request: Request, who: Principal, action_id: str) -> Response:
        """An action's items (one page holds them all)."""
        found = await self._query(lambda conn: q.get_action(conn, action_id, who.campaigns))
        if found is None:
            return error(request, 404, f"No action {action_id}")
        base = f"/Advertisers/{who.sid}/Actions/{action_id}/Items"
        docs = [
            ActionItem(ActionId=action_id, Sku=i.sku, Category=i.category,
                       Quantity=str(i.quantity), Amount=money_text(i.amount),
                       OriginalQuantity=str(i.orig_quantity),
                       OriginalAmount=money_text(i.orig_amount), Uri=f"{base}?Sku={i.sku}")
            for i in found.items
        ]  # fmt: skip
        size = max(len(docs), 1)
        return render(request, ActionItemPage(**paging(request, 1, size, len(docs), len(docs)),
                                              Items=docs))  # fmt: skip

    async def updates(self, request: Request, who: Principal) -> Response:
        """The change log of the account's actions (the audit trail), oldest first."""
        cid = self._campaign(request, who, required=False)
        campaigns = [cid] if cid else list(who.campaigns)
        action_id = request.query_params.get("ActionId", "").strip() or None
        page, size = page_params(request, *ACTION_PAGES)
        at = update_window(request)
        rows, total = await self._query(
            lambda conn: q.page_action_updates(
                conn, campaigns, action_id=action_id, at=at, offset=(page - 1) * size,
                limit=size, count_cap=MAX_PAGES * size,
            )
        )  # fmt: skip
        too_many(total, size)
        docs = [self._update_doc(who, r) for r in rows]
        return render(request, ActionUpdatePage(**paging(request, page, size, total, len(docs)),
                                                ActionUpdates=docs))  # fmt: skip

    def _update_doc(self, who: Principal, r: q.UpdateRow) -> ActionUpdate:
        e = r.entry
        return ActionUpdate(
            Id=str(r.id), ActionId=r.action_id, CampaignId=r.campaign_id,
            ActionTrackerId=str(r.event_type_id), Oid=r.order_id, UpdateDate=iso(e.at) or "",
            Type=UPDATE_TYPES.get(e.operation, e.operation.title()), DispositionCode=e.reason,
            State=impact_state(e.new_state), PreviousState=impact_state(e.old_state),
            Amount=money_text(e.new_amount), PreviousAmount=money_text(e.old_amount),
            DeltaAmount=signed(e.new_amount - e.old_amount), Payout=money_text(e.new_payout),
            PreviousPayout=money_text(e.old_payout), DeltaPayout=signed(e.new_payout -
                                                                         e.old_payout),
            Channel=e.channel, Uri=f"/Advertisers/{who.sid}/Actions/{r.action_id}",
        )  # fmt: skip

    def file_doc(self, who: Principal, f: q.FileRow) -> FtpFileSubmission:
        """A received file in impact's FTP file submission shape."""
        uri = f"/Advertisers/{who.sid}/FTPFileSubmissions/{f.id}"
        failed = f.status in ("FAILED", "DUPLICATE")
        return FtpFileSubmission(
            BatchId=f.id, AccountId=who.sid, CampaignId=f.campaign_id,
            SubmissionDate=iso(f.received_at) or "", FileName=f.name, Channel=f.channel,
            Type="Modification", Status=FILE_STATUS.get(f.status, "Complete"),
            TotalRecords=str(f.rows), TotalErrors=str(f.by_status["ERROR"] + failed),
            CompletionDate=iso(f.finished_at), ErrorsUri=f"{uri}/ErrorDetails", Uri=uri,
        )  # fmt: skip

    async def files(self, request: Request, who: Principal) -> Response:
        """Files received for the account's campaigns through every channel, newest first."""
        cid = self._campaign(request, who, required=False)
        campaigns = [cid] if cid else list(who.campaigns)
        page, size = page_params(request, *FILE_PAGES)
        received = window(request, "SubmissionDateStart", "SubmissionDateEnd")
        finished = window(request, "CompletedDateStart", "CompletedDateEnd")
        rows, total = await self._query(
            lambda conn: q.page_files(conn, campaigns, received=received, finished=finished,
                                      offset=(page - 1) * size, limit=size)
        )  # fmt: skip
        docs = [self.file_doc(who, f) for f in rows]
        return render(request, FtpFileSubmissionPage(
            **paging(request, page, size, total, len(docs)), FTPFileSubmissions=docs))  # fmt: skip

    async def file(self, request: Request, who: Principal, batch_id: str) -> Response:
        """One file submission."""
        found = await self._query(lambda conn: q.get_file(conn, batch_id, who.campaigns))
        if found is None:
            return error(request, 404, f"No file submission {batch_id}")
        return render(request, self.file_doc(who, found))

    async def error_details(self, request: Request, who: Principal, batch_id: str) -> Response:
        """The lines of a file that were not applied, and why."""
        found = await self._query(lambda conn: q.get_file(conn, batch_id, who.campaigns))
        if found is None:
            return error(request, 404, f"No file submission {batch_id}")
        page, size = page_params(request, *FILE_PAGES)
        errors, total = await run_in_threadpool(q.line_errors, found.result_path, None,
                                                page * size)  # fmt: skip
        docs = [_error_doc(found.campaign_id, e) for e in errors[(page - 1) * size :]]
        if found.status == "FAILED" and found.result_path is None and page == 1:
            docs, total = [ErrorDetail(Line="0", CampaignId=found.campaign_id,
                                       Status="Validation", Reason=found.error_code or "FAILED",
                                       Message=found.error_message)], 1  # fmt: skip
        return render(request, ErrorDetailPage(**paging(request, page, size, total, len(docs)),
                                               ErrorDetails=docs))  # fmt: skip


def _cell(cells: dict[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in cells.items()}
    for name in names:
        if lowered.get(name.lower()):
            return lowered[name.lower()]
    return None


def _error_doc(campaign_id: str, e: q.LineError) -> ErrorDetail:
    c = e.cells
    return ErrorDetail(
        Line=str(e.line), CampaignId=campaign_id,
        ActionId=e.action_id or _cell(c, "ActionId", "action_id"),
        ActionTrackerId=_cell(c, "ActionTrackerId"), OrderId=_cell(c, "OrderId", "Oid"),
        Sku=_cell(c, "Sku", "ItemSku", "Sku1"), Status=ERROR_STATUS.get(e.error_type,
                                                                         e.error_type),
        Reason=e.code, Message=e.message,
    )  # fmt: skip
