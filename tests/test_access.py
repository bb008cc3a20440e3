"""Scopes and roles: what a credential may do."""

import pytest
from hypothesis import given, strategies as st

from corral.errors import Forbidden, InvalidRequest
from corral.identity.access import SCOPES, Principal, parse_scopes, scope_allows

scope_sets = st.frozensets(st.sampled_from(SCOPES))


@given(scope_sets, st.sampled_from(SCOPES))
def test_a_scope_is_allowed_only_if_granted_or_admin(granted, needed):
    assert scope_allows(granted, needed) == (needed in granted or "admin" in granted)


@given(scope_sets.filter(lambda s: "admin" not in s))
def test_no_scope_set_without_admin_reaches_admin(granted):
    assert not scope_allows(granted, "admin")


@given(st.lists(st.sampled_from(SCOPES), min_size=1), st.sampled_from([" ", ",", ", "]))
def test_parse_scopes_accepts_lists_and_comma_separated_text(names, separator):
    assert parse_scopes([separator.join(names)]) == frozenset(names)
    assert parse_scopes(names) == frozenset(names)


@given(st.text(min_size=1, max_size=20).filter(lambda t: t.strip().lower() not in SCOPES and "," not in t and t.strip()))
def test_an_unknown_scope_is_an_error_that_lists_the_known_ones(name):
    with pytest.raises(InvalidRequest, match="scopes are admin, gateway, ingest, read"):
        parse_scopes([name])


def test_no_scopes_is_an_error():
    with pytest.raises(InvalidRequest):
        parse_scopes([])


def _principal(roles, scopes):
    return Principal(user_id=1, email="a@example.com", roles=frozenset(roles), teams=(), scopes=frozenset(scopes))


def test_require_needs_both_the_scope_and_a_role():
    _principal({"admin"}, {"admin"}).require("admin", "admin")
    with pytest.raises(Forbidden, match="scopes"):
        _principal({"admin"}, {"read"}).require("admin", "admin")
    with pytest.raises(Forbidden, match="'admin' role"):
        _principal({"developer"}, {"admin"}).require("admin", "admin")
    with pytest.raises(Forbidden, match="'admin' or 'auditor' role"):
        _principal({"developer"}, {"read"}).require("read", "admin", "auditor")
