"""A campaign's Salesforce mapping: which org may send, which record field names the action,
which status value means which operation, and the optional reconciler's credentials."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from ingest.config_types import Secret, Strict

if TYPE_CHECKING:
    from ingest.config import Settings

ORG_ID = re.compile(r"^00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
OPERATIONS = ("approve", "reset", "reverse", "modify")
Operation = Literal["approve", "reset", "reverse", "modify"]


def org15(org_id: str) -> str:
    """The case-sensitive 15-character form of an org id (Setup shows 15, messages carry 18)."""
    return org_id[:15]


class StatusRule(Strict):
    """What one status value does: an operation and, for reverse/modify, a reason code."""

    operation: Operation
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        # "approve" | {"reverse": "CONS_ERROR"} | {"operation": "modify", "reason": "…"}
        if isinstance(value, str):
            return {"operation": value}
        if isinstance(value, dict) and len(value) == 1:
            ((op, reason),) = value.items()
            if op in OPERATIONS:
                return {"operation": op, "reason": reason}
        return value


class OAuthOptions(Strict):
    """How the reconciler signs in: OAuth JWT bearer (private_key) or username-password."""

    login_url: str = "https://login.salesforce.com"
    client_id: str
    username: str
    private_key: Secret | None = None  # PEM RSA key of the connected app's certificate (JWT)
    client_secret: Secret | None = None  # username-password flow
    password: Secret | None = None
    security_token: Secret | None = None  # appended to the password, as Salesforce wants

    @field_validator("login_url")
    @classmethod
    def _https(cls, v: str) -> str:
        return https_url(v)

    @model_validator(mode="after")
    def _one_flow(self) -> OAuthOptions:
        jwt = self.private_key is not None
        password = self.client_secret is not None or self.password is not None
        if jwt == password:
            raise ValueError(
                "give 'private_key' (JWT bearer flow) or 'client_secret' + 'password' "
                "(username-password flow), not both"
            )
        if password and (self.client_secret is None or self.password is None):
            raise ValueError("the username-password flow needs both 'client_secret' and 'password'")
        return self


class ReconcileOptions(Strict):
    """The scheduled query for records changed since the stored cursor."""

    schedule: str = "*/30 * * * *"  # cron, in the campaign's time zone
    api_version: str = Field(default="61.0", pattern=r"^\d{2,3}\.\d$")
    lookback_hours: int = Field(default=24, ge=1, le=24 * 30)  # first run: this far back
    max_records: int = Field(default=2000, ge=1, le=50_000)  # per run; the next run goes on
    timeout_seconds: float = Field(default=30, gt=0)
    oauth: OAuthOptions


class SalesforceMapping(Strict):
    """How a Salesforce Outbound Message (or a reconciled record) becomes a change."""

    path: str | None = None  # endpoint on the HTTP channel's server; default /salesforce/<id>
    organization_ids: list[str] = Field(min_length=1)
    object: str = "Opportunity"
    action_id_field: str | None = None
    order_id_field: str | None = None
    event_type: int | None = Field(default=None, ge=1)  # the ActionTrackerId, fixed …
    event_type_field: str | None = None  # … or read from the record
    status_field: str = "StageName"
    statuses: dict[str, StatusRule] = Field(min_length=1)
    amount_field: str | None = None  # the new sale amount of a `modify`
    modstamp_field: str = "SystemModstamp"
    allow_from: list[str] = Field(default_factory=list)  # source addresses (CIDR); empty: any
    require_client_certificate: bool = False  # needs channels.http.tls_client_ca
    client_certificate_sha256: list[str] = Field(default_factory=list)  # pinned, hex
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    reconcile: ReconcileOptions | None = None

    @field_validator("organization_ids")
    @classmethod
    def _org_ids(cls, v: list[str]) -> list[str]:
        for org in v:
            if not ORG_ID.match(org):
                raise ValueError(f"{org!r} is not an org id (00D…, 15 or 18 characters)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^/[A-Za-z0-9/_.-]{1,200}$", v):
            raise ValueError("must start with '/' and hold only letters, digits and /_.-")
        return v

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad one
        return v

    @field_validator("client_certificate_sha256")
    @classmethod
    def _fingerprints(cls, v: list[str]) -> list[str]:
        cleaned = [f.replace(":", "").lower() for f in v]
        for f in cleaned:
            if not re.match(r"^[0-9a-f]{64}$", f):
                raise ValueError(f"{f!r} is not a SHA-256 fingerprint (64 hex digits)")
        return cleaned

    @model_validator(mode="after")
    def _identifies(self) -> SalesforceMapping:
        names = [self.object, self.status_field, self.modstamp_field]
        names += [n for n in (self.action_id_field, self.order_id_field, self.amount_field,
                              self.event_type_field) if n]  # fmt: skip
        for name in names:
            if not FIELD_NAME.match(name):
                raise ValueError(f"{name!r} is not a Salesforce API name")
        if (self.action_id_field is None) == (self.order_id_field is None):
            raise ValueError("give exactly one of 'action_id_field' or 'order_id_field'")
        if self.order_id_field and (self.event_type is None) == (self.event_type_field is None):
            raise ValueError("with 'order_id_field' give 'event_type' or 'event_type_field'")
        modifies = any(r.operation == "modify" for r in self.statuses.values())
        if modifies and self.amount_field is None:
            raise ValueError("a 'modify' status needs 'amount_field' (the new sale amount)")
        return self

    def endpoint(self, campaign_id: str) -> str:
        """The path Salesforce posts to for this campaign."""
        return self.path or f"/salesforce/{campaign_id}"

    def knows_org(self, org_id: str) -> bool:
        """Is this (15- or 18-character) org id one the campaign takes messages from?"""
        return org15(org_id) in {org15(o) for o in self.organization_ids}

    def fields(self) -> list[str]:
        """The record fields the mapping reads (what the Outbound Message must include)."""
        names = ["Id", self.action_id_field, self.order_id_field, self.event_type_field,
                 self.status_field, self.amount_field, self.modstamp_field]  # fmt: skip
        return list(dict.fromkeys(n for n in names if n))


def https_url(v: str) -> str:
    """An https URL (plain http only to a loopback address, for local stand-ins)."""
    v = v.rstrip("/")
    if v.startswith("https://") or re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])", v):
        return v
    raise ValueError("must be an https:// URL")


RESERVED_PATHS = ("/v1/", "/healthz", "/docs", "/openapi.json")
OP_CODES = {"approve": "APPROVED", "reset": "RESET", "reverse": "OTHER", "modify": "ORDER_UPDATE"}


def problems_of(settings: Settings) -> Iterator[str]:
    """Every problem of the campaigns' Salesforce mappings, with the HTTP channel they need."""
    http = settings.channels.http
    paths: dict[str, str] = {}
    for c in settings.campaigns:
        m = c.salesforce
        if m is None:
            continue
        where = f"campaign {c.id}: salesforce"
        if http is None or not http.enabled:
            yield f"{where}: the endpoint is served by the HTTP channel: configure channels.http"
        path = m.endpoint(c.id)
        if path in paths:
            yield f"{where}: path {path} is also campaign {paths[path]}'s"
        paths[path] = c.id
        if path.startswith(RESERVED_PATHS):
            yield f"{where}: path {path} is the upload API's; choose another"
        needs_ca = m.require_client_certificate or m.client_certificate_sha256
        if needs_ca and (http is None or http.tls_client_ca is None):
            yield f"{where}: client certificates need channels.http.tls_cert and tls_client_ca"
        if m.event_type is not None and m.event_type not in {e.id for e in c.event_types}:
            yield f"{where}.event_type: {m.event_type} is not one of the campaign's event types"
        yield from _reason_problems(where, m, dict(c.disposition_codes))


def _reason_problems(where: str, m: SalesforceMapping, custom: dict[str, str]) -> Iterator[str]:
    from ingest.reasons import fits, misfit_message
    from ingest.rules import OP_APPROVE, OP_MODIFY, OP_RESET, OP_REVERSE

    ops = {"approve": OP_APPROVE, "reset": OP_RESET, "reverse": OP_REVERSE, "modify": OP_MODIFY}
    for value, rule in m.statuses.items():
        reason = rule.reason or OP_CODES[rule.operation]
        if not fits(ops[rule.operation], reason, custom):
            message = misfit_message(ops[rule.operation], reason, custom)
            yield f"{where}.statuses[{value!r}]: {message}"


def secrets_of(m: SalesforceMapping) -> Iterator[tuple[str, Secret]]:
    """The reconciler's secrets, named as in the config (each must be readable at start)."""
    oauth = m.reconcile.oauth if m.reconcile else None
    for name in ("private_key", "client_secret", "password", "security_token"):
        secret = getattr(oauth, name, None)
        if secret is not None:
            yield f"salesforce.reconcile.oauth.{name}", secret
