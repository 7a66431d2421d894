"""The impact-compatible Actions routes: reads (actions, items, updates) and queued writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response

from channels.impact_openapi import (
    ACTION,
    ACTION_PAGE_SIZE,
    PAGE,
    SID,
    STATE,
    WHEN,
    Q,
    add_route,
)
from channels.impact_shapes import (
    Action,
    ActionItemPage,
    ActionPage,
    ActionUpdatePage,
    QueuedReply,
)

if TYPE_CHECKING:
    from channels.impact_api import ImpactApi
    from channels.impact_reads import ImpactReads


def mount_action_reads(app: FastAPI, api: ImpactApi, reads: ImpactReads) -> None:
    """GET …/Actions, …/Actions/{Id}, …/Actions/{Id}/Items and …/ActionUpdates."""
    route = api.guarded

    async def list_actions(
        request: Request, sid: SID, CampaignId: Q = None, State: STATE = None,
        StartDate: WHEN = None, EndDate: WHEN = None, ActionDateStart: WHEN = None,
        ActionDateEnd: WHEN = None, LockingDateStart: WHEN = None, LockingDateEnd: WHEN = None,
        Page: PAGE = None, PageSize: ACTION_PAGE_SIZE = None,
    ) -> Response:  # fmt: skip
        return await route(request, sid, reads.actions)

    async def get_action(request: Request, sid: SID, action_id: ACTION) -> Response:
        return await route(request, sid, reads.action, action_id=action_id)

    async def get_items(request: Request, sid: SID, action_id: ACTION) -> Response:
        return await route(request, sid, reads.items, action_id=action_id)

    async def list_updates(
        request: Request, sid: SID, CampaignId: Q = None, ActionId: Q = None,
        StartDate: WHEN = None, EndDate: WHEN = None, Page: PAGE = None,
        PageSize: ACTION_PAGE_SIZE = None,
    ) -> Response:  # fmt: skip
        return await route(request, sid, reads.updates)

    add_route(app, "GET", "/Actions", list_actions, ActionPage, "List a campaign's actions")
    add_route(app, "GET", "/Actions/{action_id}", get_action, Action, "An action")
    add_route(app, "GET", "/Actions/{action_id}/Items", get_items, ActionItemPage,
              "An action's items")  # fmt: skip
    add_route(app, "GET", "/ActionUpdates", list_updates, ActionUpdatePage, "List action updates")


def mount_action_writes(app: FastAPI, api: ImpactApi) -> None:
    """PUT, DELETE and POST (`_method`) …/Actions: each stores the request and answers QUEUED."""
    route = api.guarded

    async def put_actions(request: Request, sid: SID) -> Response:
        return await route(request, sid, api.modify)

    async def delete_actions(request: Request, sid: SID) -> Response:
        return await route(request, sid, api.reverse)

    async def post_actions(request: Request, sid: SID) -> Response:
        return await route(request, sid, api.overloaded)

    add_route(app, "PUT", "/Actions", put_actions, QueuedReply, "Modify an action (queued)",
              body=True)  # fmt: skip
    add_route(app, "DELETE", "/Actions", delete_actions, QueuedReply,
              "Reverse an action (queued)", body=True)  # fmt: skip
    add_route(app, "POST", "/Actions", post_actions, QueuedReply, "PUT or DELETE via _method",
              body=True)  # fmt: skip
