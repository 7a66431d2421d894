"""Pending and Reversed actions, an action's detail, and changes (one, or in bulk).

Every change goes through `ingest.operations` with the signed-in user as actor and channel
`console`; the answer is the operation's own outcome (APPLIED / UNCHANGED / the error code and
message a file row would get).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from console.views import parse_view
from console.web import (
    CurrentUser,
    NotFound,
    check_csrf,
    ctx_of,
    is_htmx,
    render,
)
from ingest import queries
from ingest.operations import (
    Change,
    ChangeOutcome,
    ItemEdit,
    Operation,
    Role,
    apply_changes,
    reasons_for,
)
from ingest.users import User

router = APIRouter(dependencies=[Depends(check_csrf)])
PAGE_SIZE = 50
BULK_CAP = 10_000
OPS = {"approve": Operation.APPROVE, "reverse": Operation.REVERSE, "modify": Operation.MODIFY,
       "restore": Operation.RESET}  # fmt: skip


def _reasons(campaign: Any) -> dict[str, list[str]]:
    codes = dict(campaign.disposition_codes)
    return {name: reasons_for(op, codes) for name, op in OPS.items()}


@router.get("/actions")
def pending(request: Request, user: CurrentUser) -> Response:
    """Pending actions of a campaign, filtered and keyset-paged."""
    return _listing(request, user, "pending")


@router.get("/reversed")
def reversed_actions(request: Request, user: CurrentUser) -> Response:
    """Reversed actions of a campaign, with a reversal-reason filter and Restore."""
    return _listing(request, user, "reversed")


def _listing(request: Request, user: User, page: str) -> Response:
    ctx = ctx_of(request)
    view = parse_view(ctx.settings, user, page, request.query_params)
    cursor = request.query_params.get("cursor") or None
    with ctx.store.read() as conn:
        found = queries.list_actions(conn, view.filter, sort=view.sort,
                                     descending=view.descending, cursor=cursor,
                                     limit=PAGE_SIZE)  # fmt: skip
        counted = queries.count_actions_upto(conn, view.filter) if not cursor else None
    saved = _saved_views(request, user, page)
    return render(request, "actions.html", page=page, view=view, rows=found.rows,
                  next_cursor=found.next_cursor, paged=bool(cursor), counted=counted,
                  reasons=_reasons(view.campaign), saved=saved,
                  title="Reversed actions" if page == "reversed" else "Pending actions",
                  )  # fmt: skip


def _saved_views(request: Request, user: User, page: str) -> list[Any]:
    from console.reports import saved_views

    return saved_views(ctx_of(request).store, user, page)


def _visible_action(request: Request, user: User, action_id: str) -> queries.ActionDetail:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        found = queries.get_action(conn, action_id, user.scope)
    if found is None:
        raise NotFound()
    return found


@router.get("/actions/{action_id}")
def detail(request: Request, action_id: str, user: CurrentUser) -> Response:
    """Every field of an action, its items, its full history and the time left until it locks."""
    return _detail(request, user, _visible_action(request, user, action_id))


def _detail(
    request: Request, user: User, found: queries.ActionDetail,
    outcome: ChangeOutcome | None = None, status: int = 200,
) -> Response:  # fmt: skip
    campaign = ctx_of(request).settings.campaign(found.action.campaign_id)
    return render(request, "action.html", status, a=found.action, items=found.items,
                  history=found.history, campaign=campaign, reasons=_reasons(campaign),
                  outcome=outcome, title=f"Action {found.action.id}")  # fmt: skip


@router.get("/actions/{action_id}/edit")
def row_editor(
    request: Request, action_id: str, user: CurrentUser, op: str = "reverse"
) -> Response:
    """The inline editor of a listing row (htmx swaps it over the row)."""
    found = _visible_action(request, user, action_id)
    campaign = ctx_of(request).settings.campaign(found.action.campaign_id)
    return render(request, "partials/row_editor.html", a=found.action, op=op,
                  reasons=_reasons(campaign))  # fmt: skip


def _change_from_form(action_id: str, form: Any, user: User) -> Change:
    op = OPS.get(str(form.get("op", "")))
    if op is None:
        raise NotFound()
    text = {k: (str(form.get(k) or "").strip() or None) for k in
            ("reason", "amount", "customer_status", "sku", "quantity", "item_amount")}  # fmt: skip
    items: tuple[ItemEdit, ...] = ()
    if op == Operation.MODIFY and text["sku"]:
        items = (ItemEdit(text["sku"], text["quantity"] or "0", text["item_amount"]),)
    return Change(
        action_id, op, reason=text["reason"],
        amount=text["amount"] if op == Operation.MODIFY and not items else None,
        customer_status=text["customer_status"] if op == Operation.MODIFY else None,
        items=items, override_cpc=user.is_operator and form.get("override_cpc") == "1",
    )  # fmt: skip


def apply_as(request: Request, user: User, campaign_id: str, changes: list[Change]) -> list[
        ChangeOutcome]:  # fmt: skip
    """Apply changes as the signed-in user through the console channel."""
    ctx = ctx_of(request)
    role = Role.OPERATOR if user.is_operator else Role.ADVERTISER
    return apply_changes(ctx.store, ctx.settings, campaign_id, changes, actor=user.login,
                         channel="console", role=role)  # fmt: skip


@router.post("/actions/{action_id}/change")
async def change(request: Request, action_id: str, user: CurrentUser) -> Response:
    """Approve, reverse, modify (amount or one item) or restore one action."""
    found = _visible_action(request, user, action_id)
    form = await request.form()
    wanted = _change_from_form(action_id, form, user)
    if wanted.override_cpc and form.get("confirm_cpc") != "1":
        return render(request, "confirm_cpc.html", a=found.action, fields=dict(form),
                      title="Confirm CPC override")  # fmt: skip
    (outcome,) = apply_as(request, user, found.action.campaign_id, [wanted])
    found = _visible_action(request, user, action_id)
    if is_htmx(request) and form.get("view") == "row":
        campaign = ctx_of(request).settings.campaign(found.action.campaign_id)
        return render(request, "partials/action_row.html", a=found.action, outcome=outcome,
                      reasons=_reasons(campaign), page=str(form.get("page") or "pending"),
                      )  # fmt: skip
    return _detail(request, user, found, outcome)


@router.post("/actions/bulk")
async def bulk(request: Request, user: CurrentUser) -> Response:
    """Approve or reverse the selected actions (or all matching the view) with one reason.

    The first post answers with a confirmation naming how many actions; the confirmed post
    applies them and lists each action's outcome.
    """
    ctx = ctx_of(request)
    form = await request.form()
    page = "reversed" if form.get("page") == "reversed" else "pending"
    view = parse_view(ctx.settings, user, page, {k: str(v) for k, v in form.items()})
    op_name = str(form.get("op") or "")
    if op_name not in ("approve", "reverse"):
        raise NotFound()
    if form.get("all_matching") == "1":
        with ctx.store.read() as conn:
            ids = queries.action_ids_matching(conn, view.filter, BULK_CAP)
    else:
        ids = [str(v) for v in form.getlist("ids")][:BULK_CAP]
    reason = str(form.get("reason") or "") or None
    if form.get("confirmed") != "1" or not ids:
        return render(request, "bulk_confirm.html", view=view, ids=ids, op=op_name,
                      reason=reason, all_matching=form.get("all_matching") == "1",
                      title="Confirm bulk change")  # fmt: skip
    changes = [Change(i, OPS[op_name], reason=reason) for i in ids]
    outcomes = apply_as(request, user, view.campaign.id, changes)
    tally: dict[str, int] = {}
    for o in outcomes:
        key = o.status if o.status != "ERROR" else f"ERROR {o.error_code}"
        tally[key] = tally.get(key, 0) + 1
    return render(request, "bulk_result.html", view=view, outcomes=outcomes, op=op_name,
                  reason=reason, tally=sorted(tally.items()), title="Bulk change result",
                  )  # fmt: skip
