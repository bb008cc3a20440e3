"""Who is acting and what they may do: the Principal, the built-in roles, key scopes, and the
checks every surface calls. Pure: no I/O. A check that fails says what is missing and how to
get it, and never reveals anything about other users.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from corral.errors import Forbidden, InvalidRequest

BUILTIN_ROLES = ("admin", "approver", "auditor", "developer", "contractor")
SCOPES = ("admin", "gateway", "ingest", "read", "policy")
DEFAULT_KEY_SCOPES = frozenset({"gateway", "ingest", "read"})


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Validate a list of scope names (an item with commas or spaces is split)."""
    names = {part.lower() for scope in scopes for part in scope.replace(",", " ").split()}
    if not names:
        raise InvalidRequest(f"a key needs at least one scope: {', '.join(SCOPES)}")
    unknown = sorted(names - set(SCOPES))
    if unknown:
        raise InvalidRequest(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    return frozenset(names)


def scope_allows(granted: frozenset[str], needed: str) -> bool:
    """`admin` is every scope; any other scope is only itself."""
    return "admin" in granted or needed in granted


def check_role(role: str, known: Iterable[str] = BUILTIN_ROLES) -> str:
    known = tuple(known)
    name = role.strip().lower()
    if name not in known:
        raise InvalidRequest(f"unknown role {role!r}; roles are {', '.join(known)}")
    return name


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, their teams and roles, and the credential they used."""

    user_id: int
    email: str
    roles: frozenset[str]
    teams: tuple[str, ...]
    scopes: frozenset[str]
    key_id: int | None = None
    via: str = "key"  # "key" or "oidc"

    @property
    def team(self) -> str | None:
        """The team an action is attributed to when only one can be named."""
        return self.teams[0] if self.teams else None

    def require(self, scope: str, *roles: str) -> None:
        """Raise Forbidden unless the credential has `scope` and the user one of `roles`."""
        if not scope_allows(self.scopes, scope):
            held = ", ".join(sorted(self.scopes)) or "none"
            raise Forbidden(f"this key's scopes ({held}) do not include {scope!r}; use a key with that scope")
        if roles and not self.roles.intersection(roles):
            needed = " or ".join(repr(role) for role in roles)
            raise Forbidden(f"this needs the {needed} role; an administrator can grant it with "
                            f"`corral admin user grant {self.email} --role {roles[0]}`")
