"""Cross-field checks of a configuration: clashes, missing files, unreadable secrets, bad crons."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ingest.salesforce_config import problems_of as salesforce_problems
from ingest.salesforce_config import secrets_of as salesforce_secrets

if TYPE_CHECKING:
    from ingest.campaign_config import Campaign
    from ingest.config import Settings
    from ingest.config_types import Secret


def problems_of(s: Settings) -> Iterator[str]:
    """Yield every cross-field problem of `s`."""
    yield from _problems(s)


def _problems(s: Settings) -> Iterator[str]:
    seen: dict[str, dict[str, str]] = {
        "campaign": {},
        "tracker": {},
        "ftp login": {},
        "address": {},
    }

    def once(kind: str, key: str, owner: str) -> Iterator[str]:
        if key in seen[kind]:
            yield f"{kind} {key!r} is used by both {seen[kind][key]} and {owner}"
        seen[kind][key] = owner

    for c in s.campaigns:
        yield from once("campaign", c.id, f"campaign #{s.campaigns.index(c) + 1}")
        for et in c.event_types:
            yield from once("tracker", str(et.id), f"campaign {c.id}")
        if c.ftp:
            yield from once("ftp login", c.ftp.login, f"campaign {c.id}")
            if c.ftp.password_hash_file and not s.path(c.ftp.password_hash_file).exists():
                missing = c.ftp.password_hash_file
                yield f"campaign {c.id}: ftp password_hash_file {missing} is missing"
        if c.smtp:
            yield from once("address", c.smtp.address, f"campaign {c.id}")
        for name, secret in _secrets_of(c):
            problem = secret.problem()
            if problem:
                yield f"campaign {c.id}: {name}: {problem}"
    ports: dict[tuple[str, int], str] = {}
    for name in ("ftp", "smtp", "http"):
        ch = getattr(s.channels, name)
        if ch is None or not ch.enabled or ch.port == 0:
            continue
        key = (ch.host, ch.port)
        if key in ports:
            yield f"channels {ports[key]} and {name} both listen on {ch.host}:{ch.port}"
        ports[key] = name
    for name in ("ftp", "smtp", "http"):
        ch = getattr(s.channels, name)
        if ch is not None and (ch.tls_cert is None) != (ch.tls_key is None):
            yield f"channels.{name}: give both tls_cert and tls_key, or neither"
        if ch is not None and ch.tls_cert is not None:
            for p in (ch.tls_cert, ch.tls_key):
                if not s.path(p).exists():
                    yield f"channels.{name}: {p} does not exist"
    smtp = s.channels.smtp
    if smtp and (smtp.require_starttls or smtp.auth_users) and not smtp.tls_cert:
        yield "channels.smtp: require_starttls and auth_users need tls_cert and tls_key"
    yield from _cron_problems(s)
    yield from salesforce_problems(s)
    yield from _cluster_problems(s)
    ftp = s.channels.ftp
    if ftp and ftp.passive_ports and ftp.passive_ports[0] > ftp.passive_ports[1]:
        yield "channels.ftp.passive_ports: first port must not exceed the second"
    yield from _api_account_problems(s)


def _api_account_problems(s: Settings) -> Iterator[str]:
    known = {c.id for c in s.campaigns}
    sids: set[str] = set()
    for a in s.impact_api.accounts:
        if a.sid in sids:
            yield f"impact_api.accounts: AccountSID {a.sid!r} is declared twice"
        sids.add(a.sid)
        for cid in a.campaigns:
            if cid not in known:
                yield f"impact_api.accounts {a.sid}: unknown campaign {cid!r}"


def _cluster_problems(s: Settings) -> Iterator[str]:
    if not s.cluster.enabled:
        return
    if not s.database_url.startswith(("postgresql://", "postgres://", "postgresql+")):
        yield "cluster.enabled needs a PostgreSQL database_url (SQLite is single-node)"
    if s.cluster.heartbeat_seconds * 2 > s.cluster.lease_seconds:
        yield "cluster.heartbeat_seconds must be at most half of cluster.lease_seconds"


def _cron_problems(s: Settings) -> Iterator[str]:
    from apscheduler.triggers.cron import CronTrigger

    crons = [("lock_schedule", s.lock_schedule), ("retention_schedule", s.retention_schedule)]
    crons += [(f"campaign {c.id}: pull.schedule", c.pull.schedule) for c in s.campaigns if c.pull]
    crons += [(f"campaign {c.id}: salesforce.reconcile.schedule", c.salesforce.reconcile.schedule)
              for c in s.campaigns if c.salesforce and c.salesforce.reconcile]  # fmt: skip
    for where, expr in crons:
        try:
            CronTrigger.from_crontab(expr)
        except ValueError as exc:
            yield f"{where}: {expr!r} is not a cron expression ({exc})"


def _secrets_of(c: Campaign) -> Iterator[tuple[str, Secret]]:
    if c.http and c.http.token:
        yield "http.token", c.http.token
    if c.salesforce:
        yield from salesforce_secrets(c.salesforce)
    if c.pull:
        if c.pull.password:
            yield "pull.password", c.pull.password
        if c.pull.private_key:
            yield "pull.private_key", c.pull.private_key
