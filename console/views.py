"""A listing's view: the URL's filters, validated, as an `ingest.queries.ActionFilter`.

The same query string drives the page, its exports, saved views and scheduled reports, so a
view reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode

from console.web import NotFound
from ingest.config import Campaign, Settings
from ingest.queries import ActionFilter
from ingest.users import User

PAGES = ("pending", "reversed")
PENDING_STATES = ("PENDING", "APPROVED", "LOCKED", "REVERSED")
FIELDS = ("campaign", "partner", "event_type", "order_id", "action_id", "state", "from", "to",
          "locks_within", "reason", "sort", "dir")  # fmt: skip


@dataclass(frozen=True)
class View:
    """A validated listing view: its campaign, filter, sort, and the values to refill the form."""

    page: str
    campaign: Campaign
    filter: ActionFilter
    sort: str
    descending: bool
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)

    def query(self, **extra: str) -> str:
        """The view as a query string (without a cursor), plus `extra`."""
        doc = {k: v for k, v in self.values.items() if v}
        doc.update({k: v for k, v in extra.items() if v})
        return urlencode(doc)

    def api_request(self) -> str:
        """The impact-compatible Actions API request (SPEC §10) listing the same campaign, state
        and event dates (the API has no partner, order or lock filter)."""
        doc = {"CampaignId": self.campaign.id}
        if self.filter.states:
            doc["State"] = ",".join(self.filter.states)
        if self.filter.event_from:
            doc["ActionDateStart"] = self.filter.event_from.isoformat()
        if self.filter.event_to:
            doc["ActionDateEnd"] = self.filter.event_to.isoformat()
        return "GET /Advertisers/{AccountSID}/Actions?" + urlencode(doc, safe="{}:,")

    def describe(self) -> list[tuple[str, str]]:
        """The filters in force, as (label, value) pairs for report headers."""
        labels = {"partner": "Partner", "event_type": "Event type", "order_id": "Order id",
                  "action_id": "Action id", "state": "State", "from": "Event from",
                  "to": "Event to", "locks_within": "Locks within (days)",
                  "reason": "Reversal reason"}  # fmt: skip
        out = [("Campaign", f"{self.campaign.name} ({self.campaign.id})")]
        out += [(label, self.values[k]) for k, label in labels.items() if self.values.get(k)]
        return out


def parse_view(settings: Settings, user: User, page: str, params: Mapping[str, str]) -> View:
    """Validate a listing's query parameters; a campaign the user may not see is a 404."""
    values = {k: (params.get(k) or "").strip() for k in FIELDS}
    visible = [c for c in settings.campaigns if user.sees(c.id)]
    if not visible:
        raise NotFound()
    wanted = values["campaign"] or visible[0].id
    campaign = next((c for c in visible if c.id == wanted), None)
    if campaign is None:
        raise NotFound()
    values["campaign"] = campaign.id
    errors: list[str] = []
    tz = campaign.tz
    event_type = _int(values, "event_type", "Event type", errors)
    if event_type is not None and event_type not in {e.id for e in campaign.event_types}:
        errors.append(f"Event type {event_type} is not one of this campaign's")
        event_type = None
    start = _day(values, "from", errors)
    end = _day(values, "to", errors)
    within = _int(values, "locks_within", "Locks within", errors)
    if within is not None and not 0 <= within <= 3650:
        errors.append("Locks within: give a number of days from 0 to 3650")
        within = None
    if page == "reversed":
        states: tuple[str, ...] = ("REVERSED",)
        values["state"] = ""
    else:
        state = values["state"].upper() or "PENDING"
        if state != "ANY" and state not in PENDING_STATES:
            errors.append(f"State must be one of {', '.join(PENDING_STATES)} or ANY")
            state = "PENDING"
        values["state"] = state
        states = () if state == "ANY" else (state,)
    sort = "lock_at" if values["sort"] == "lock" else "event_at"
    flt = ActionFilter(
        campaign_id=campaign.id, states=states, partner_id=values["partner"] or None,
        event_type_id=event_type, order_id=values["order_id"] or None,
        action_id=values["action_id"] or None,
        event_from=datetime.combine(start, time(), tz) if start else None,
        event_to=datetime.combine(end + timedelta(days=1), time(), tz) if end else None,
        locks_within_days=within,
        reversal_reason=(values["reason"] or None) if page == "reversed" else None,
    )  # fmt: skip
    return View(page, campaign, flt, sort, values["dir"] != "asc", values, errors)


def _int(values: dict[str, str], key: str, label: str, errors: list[str]) -> int | None:
    text = values[key]
    if not text:
        return None
    if not text.isdigit():
        errors.append(f"{label}: {text!r} is not a whole number")
        values[key] = ""
        return None
    return int(text)


def _day(values: dict[str, str], key: str, errors: list[str]) -> date | None:
    text = values[key]
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{key.title()} date: {text!r} is not a date (YYYY-MM-DD)")
        values[key] = ""
        return None
