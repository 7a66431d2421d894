"""The two Salesforce REST calls the reconciler needs, with httpx: the OAuth 2.0 token (JWT
bearer flow signed RS256 with the connected app's key, or the username-password flow) and the SOQL
query with its `nextRecordsUrl` pages. httpx errors and Salesforce's refusals become returnsd's
errors here: unreachable or 5xx is Transient (the next run retries), 4xx is Terminal."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from ingest.errors import ConfigError, Terminal, Transient
from ingest.salesforce_config import OAuthOptions, ReconcileOptions

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class SalesforceUnavailable(Transient):
    """Salesforce did not answer (network, 5xx): the next run tries again."""


class SalesforceRefused(Terminal):
    """Salesforce refused the sign-in or the query (credentials, SOQL): an operator must look."""


@dataclass(frozen=True)
class Session:
    """A signed-in session: the bearer token, the org's API host, the org id."""

    token: str
    instance_url: str
    org_id: str | None


class RestClient:
    """The two Salesforce REST calls the reconciler needs: the OAuth token and the SOQL query."""

    def __init__(self, options: ReconcileOptions, http: httpx.Client | None = None) -> None:
        self.options = options
        self.http = http or httpx.Client(timeout=options.timeout_seconds)

    def login(self) -> Session:
        """Sign in with the configured OAuth flow."""
        oauth = self.options.oauth
        doc = self._call("POST", f"{oauth.login_url}/services/oauth2/token", data=_grant(oauth))
        org = str(doc.get("id", "")).rstrip("/").split("/")[-2:-1]
        return Session(
            str(doc["access_token"]), str(doc["instance_url"]).rstrip("/"), org[0] if org else None
        )

    def query(self, session: Session, soql: str) -> Iterator[dict[str, Any]]:
        """Every record the query returns, following `nextRecordsUrl` page after page."""
        version = self.options.api_version
        url: str | None = f"{session.instance_url}/services/data/v{version}/query"
        params: dict[str, str] | None = {"q": soql}
        headers = {"Authorization": f"Bearer {session.token}"}
        while url:
            doc = self._call("GET", url, params=params, headers=headers)
            yield from doc.get("records", [])
            following = doc.get("nextRecordsUrl")
            url, params = (
                (f"{session.instance_url}{following}", None) if following else (None, None)
            )

    def _call(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self.http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise SalesforceUnavailable(f"salesforce {url.split('?')[0]}: {exc}") from exc
        if r.status_code >= 500:
            raise SalesforceUnavailable(f"salesforce answered {r.status_code}; trying later")
        try:
            doc = json.loads(r.text, parse_float=Decimal)  # money stays exact
        except ValueError as exc:
            raise SalesforceUnavailable(f"salesforce answered {r.status_code}, not JSON") from exc
        if r.status_code >= 400:
            raise SalesforceRefused(f"salesforce refused ({r.status_code}): {_why(doc)}")
        return dict(doc)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()


def _why(doc: Any) -> str:
    if isinstance(doc, list) and doc:  # the query API answers a list of {errorCode, message}
        doc = doc[0]
    if isinstance(doc, dict):
        parts = (doc.get(k) for k in ("error", "error_description", "errorCode", "message"))
        return ": ".join(str(p) for p in parts if p) or "no reason given"
    return "no reason given"


def _grant(oauth: OAuthOptions) -> dict[str, str]:
    """The token request's form: a signed JWT assertion, or the username-password grant."""
    if oauth.private_key is not None:
        return {"grant_type": JWT_GRANT, "assertion": jwt_assertion(oauth)}
    assert oauth.client_secret is not None and oauth.password is not None
    password = oauth.password.reveal()
    if oauth.security_token is not None:
        password += oauth.security_token.reveal()
    return {
        "grant_type": "password",
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret.reveal(),
        "username": oauth.username,
        "password": password,
    }


def jwt_assertion(oauth: OAuthOptions, now: float | None = None) -> str:
    """The RS256-signed JWT of Salesforce's OAuth JWT bearer flow (valid three minutes)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    assert oauth.private_key is not None
    key = serialization.load_pem_private_key(oauth.private_key.reveal().encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("salesforce.reconcile.oauth.private_key: an RSA key is needed (RS256)")
    claims = {
        "iss": oauth.client_id,
        "sub": oauth.username,
        "aud": oauth.login_url,
        "exp": int((now or time.time()) + 180),
    }
    signing = f"{_b64({'alg': 'RS256'})}.{_b64(claims)}"
    signature = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _b64(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
