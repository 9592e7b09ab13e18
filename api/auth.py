"""Bearer tokens with roles (SPEC §3, §5).

``JOBQUEUE_API_TOKENS`` holds comma-separated ``role:token``,
``name:role:token`` or ``team/name:role:token`` entries. Tokens are compared in
constant time and never logged or shown; the actor recorded in events (and a
job's owner) is the token's name, or its role when it has none. A token's team
(``default`` when it names none) is the team its jobs belong to and the only
one whose jobs an operator may act on; an admin acts on every team's.
"""

from __future__ import annotations

import dataclasses
import hmac
import re

from flask import g, request

from api.errors import ApiError
from jobqueue.specs import DEFAULT_TEAM

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}


_TEAM = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclasses.dataclass(frozen=True)
class Token:
    name: str | None
    role: str
    secret: str = dataclasses.field(repr=False)
    team: str = DEFAULT_TEAM

    @property
    def actor(self) -> str:
        return self.name or self.role


def parse_tokens(raw: str) -> list[Token]:
    """Parse the setting; raises ValueError with a message that shows no secret."""
    tokens = []
    for number, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) == 2:
            name, (role, secret) = None, parts
        elif len(parts) == 3:
            name, role, secret = parts
        else:
            raise ValueError(
                f"JOBQUEUE_API_TOKENS entry {number} is not role:token or name:role:token"
            )
        if role not in _RANK:
            raise ValueError(
                f"JOBQUEUE_API_TOKENS entry {number}: role must be one of {', '.join(ROLES)}"
            )
        if not secret:
            raise ValueError(f"JOBQUEUE_API_TOKENS entry {number} has an empty token")
        team = DEFAULT_TEAM
        if name and "/" in name:
            team, name = name.split("/", 1)
            if not _TEAM.match(team) or not name:
                raise ValueError(
                    f"JOBQUEUE_API_TOKENS entry {number}: team/name needs a team of letters, "
                    "digits and ._- and a name"
                )
        tokens.append(Token(name or None, role, secret, team))
    return tokens


class Authenticator:
    def __init__(self, tokens: list[Token], *, enabled: bool):
        if enabled and not tokens:
            raise ValueError(
                "auth is on but JOBQUEUE_API_TOKENS holds no token: set tokens "
                "(e.g. operator:s3cret) or JOBQUEUE_AUTH=off"
            )
        self.tokens = tokens
        self.enabled = enabled

    def identify(self) -> Token:
        """The caller's token; raises 401 when missing or unknown."""
        if not self.enabled:
            return Token(None, "admin", "")
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        presented_bytes = presented.strip().encode()
        match = None
        for token in self.tokens:  # look at every token, so timing tells nothing
            if hmac.compare_digest(token.secret.encode(), presented_bytes):
                match = token
        if match is None:
            raise ApiError(401, "unauthorized", "the token is not valid")
        return match

    def require(self, role: str) -> Token:
        token = self.identify()
        if _RANK[token.role] < _RANK[role]:
            raise ApiError(
                403,
                "forbidden",
                f"this needs the {role} role; the token has {token.role}",
                required=role,
                role=token.role,
            )
        g.token = token
        return token


def required_role(method: str, path: str) -> str | None:
    """The role a request under /api needs (None: open)."""
    if not path.startswith("/api/"):
        return None
    if path.startswith("/api/admin/"):
        return "admin"
    if path.startswith("/api/teams") and method not in ("GET", "HEAD", "OPTIONS"):
        return "admin"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "viewer"
    return "operator"


def actor() -> str:
    return g.token.actor


def token() -> Token:
    return g.token
