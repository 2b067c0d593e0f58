"""Single sign-on with OpenID Connect: the authorization code flow with PKCE.

The centre's identity provider proves who the person is; aisc then signs in the user whose
email the provider has verified. Nobody gets an account by signing in: operators create users,
and the provider only authenticates them. Tokens are checked with joserfc (signature against the
provider's published keys, issuer, audience, expiry and nonce).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
TIMEOUT_S = 10.0


class OidcError(Exception):
    """The sign-in could not be completed; the message says why, for the person signing in."""


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    label: str


@dataclass(frozen=True)
class PendingSignIn:
    """What the browser carries between leaving for the provider and coming back."""

    state: str
    nonce: str
    verifier: str  # PKCE: only its hash went to the provider
    next_path: str

    def encode(self) -> str:
        fields = [self.state, self.nonce, self.verifier, self.next_path]
        return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()

    @classmethod
    def decode(cls, value: str | None) -> PendingSignIn | None:
        try:
            fields = json.loads(base64.urlsafe_b64decode((value or "").encode()))
        except ValueError:
            return None
        if not (isinstance(fields, list) and len(fields) == 4):
            return None
        if not all(isinstance(f, str) for f in fields):
            return None
        return cls(*fields)


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str


class OidcClient:
    def __init__(self, settings: OidcSettings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self._http = http or httpx.Client(timeout=TIMEOUT_S)
        self._discovery: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the identity provider did not answer ({exc})") from None

    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery is None:
                issuer = self.settings.issuer.rstrip("/")
                found = self._get_json(f"{issuer}/.well-known/openid-configuration")
                if found.get("issuer", "").rstrip("/") != issuer:
                    raise OidcError("the identity provider names a different issuer")
                self._discovery = found
            return self._discovery

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, PendingSignIn]:
        """The provider's sign-in address, and what to keep until the browser returns."""
        pending = PendingSignIn(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next_path=next_path or "/",
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email profile",
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        return f"{self.discovery()['authorization_endpoint']}?{query}", pending

    def finish(self, code: str, pending: PendingSignIn, redirect_uri: str) -> Identity:
        """Exchange the code for an ID token and check it; the verified email, or OidcError."""
        provider = self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
        }
        secret = self.settings.client_secret
        auth = httpx.Auth()  # the base class adds nothing to the request
        if secret:
            auth = httpx.BasicAuth(self.settings.client_id, secret)
        else:  # a public client: PKCE alone proves the code is ours
            form["client_id"] = self.settings.client_id
        try:
            response = self._http.post(provider["token_endpoint"], data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise OidcError(f"the identity provider did not answer ({exc})") from None
        if response.status_code != 200:
            raise OidcError("the identity provider refused the sign-in code")
        id_token = response.json().get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider sent no ID token")
        claims = self._verified_claims(id_token, pending.nonce, provider)
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise OidcError("the identity provider did not share an email address")
        if claims.get("email_verified") is not True:
            raise OidcError("the identity provider has not verified this email address")
        return Identity(subject=str(claims["sub"]), email=email)

    def _verified_claims(
        self, id_token: str, nonce: str, provider: dict[str, Any]
    ) -> dict[str, Any]:
        published = self._get_json(provider["jwks_uri"])
        try:
            keys = KeySet.import_key_set(cast("KeySetSerialization", published))
            token = jwt.decode(id_token, keys, algorithms=SIGNING_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": provider["issuer"]},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the identity provider's ID token is not valid ({exc})") from None
        return dict(token.claims)


def oidc_from_settings(
    issuer: str | None, client_id: str, secret: str, label: str
) -> OidcClient | None:
    """The client when an issuer is configured; None leaves the portal on passwords alone."""
    if not issuer:
        return None
    return OidcClient(OidcSettings(issuer, client_id, secret, label))
