"""The decision engine as a pure function: the demo policy (the issue's example) decided for the
demo people, read off the policy by hand; the combining rules; overrides; and properties that
must hold for any policy (hypothesis)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from corral.policy.engine import STRICTNESS, CompiledPolicy, EffectivePolicy, Request, Subject, strictest
from corral.policy.overrides import Override
from corral.policy.schema import Policy, Rule, load_policy

DEMO = load_policy((Path(__file__).parent.parent / "corral/policy/demo.yaml").read_text())
ENGINE = EffectivePolicy(CompiledPolicy(DEMO, 1))
ALICE = Subject("alice@example.com", ("platform",), frozenset({"developer"}), "roo-code")
CAROL = Subject("carol@example.com", ("contractors",), frozenset({"contractor"}), "cline")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def decide(action, resource, who=ALICE, engine=ENGINE, **context):
    return engine.decide(Request(action, resource, who, **context))


@pytest.mark.parametrize("line, effect, rule", [
    ("ls && rm -rf /", "deny", "no-destructive-commands"),
    ("git status; terraform destroy -auto-approve", "deny", "no-destructive-commands"),
    ("sudo rm -rf /tmp/x", "deny", "no-destructive-commands"),
    ("bash -c 'git push --force origin main'", "deny", "no-destructive-commands"),
    ("echo $(rm -rf ~)", "deny", "no-destructive-commands"),
    ("ls -la", "allow", "read-only-commands"),
    ("git diff HEAD~1 | grep foo", "allow", "read-only-commands"),
    ("npm test", "confirm", "defaults.command.exec"),
    ("ls && npm test", "confirm", "defaults.command.exec"),
    ("ls > listing.txt", "confirm", "defaults.file.write"),
])
def test_command_lines_are_decided_by_their_strictest_simple_command(line, effect, rule):
    decision = decide("command.exec", line)
    assert decision.effect == effect
    assert rule in decision.rules


@pytest.mark.parametrize("line", ["$CMD -rf /", "ls; $(echo ls)", "ls |", "{ls,-la}"])
def test_a_line_that_cannot_be_known_is_never_allowed(line):
    decision = decide("command.exec", line)
    assert decision.effect != "allow"
    assert "parser" in decision.rules


def test_a_contractors_mutating_tool_call_is_denied():
    decision = decide("tool.call", "tracker/create_issue", CAROL)  # unknown to the policy: destructive
    assert (decision.effect, decision.rules) == ("deny", ("contractors-no-mutating-tools",))


@pytest.mark.parametrize("who, tool, annotations, effect, rule", [
    (CAROL, "everything/echo", None, "allow", "read-only-tools"),
    (ALICE, "tracker/delete_ticket", {"readOnlyHint": True}, "approve", "destructive-tools-need-approval"),
    (ALICE, "tracker/list_tickets", {"readOnlyHint": True}, "allow", "read-only-tools"),
    (ALICE, "tracker/update_ticket", {"destructiveHint": False}, "confirm", "defaults.tool.call"),
    (ALICE, "everything/add", {"readOnlyHint": True}, "approve", "destructive-tools-need-approval"),
    (ALICE, "unknown/thing", None, "approve", "destructive-tools-need-approval"),
])
def test_tool_classes_come_from_the_policy_then_trusted_annotations_then_destructive(
        who, tool, annotations, effect, rule):
    # tracker is trust_annotations: true, but `tracker/delete_*` is classified destructive by the
    # policy; `everything` is not trusted, so its hints count for nothing.
    decision = decide("tool.call", tool, who, tool_annotations=annotations)
    assert (decision.effect, decision.rules) == (effect, (rule,))


@pytest.mark.parametrize("who, asked, effect, rule, targets", [
    (ALICE, "dev-fast", "allow", "everyone-may-use-profiles", ["openai/gpt-5-mini", "demo/echo"]),
    (ALICE, "release-safe", "allow", "everyone-may-use-profiles", ["claude/claude-sonnet-4-5"]),
    (CAROL, "release-safe", "deny", "contractors-no-release-profile", ["claude/claude-sonnet-4-5"]),
    (CAROL, "dev-fast", "allow", "everyone-may-use-profiles", ["openai/gpt-5-mini", "demo/echo"]),
    (ALICE, "openai/gpt-5", "deny", "default", None),
])
def test_llm_requests_are_decided_by_profile_and_routed_to_its_targets(who, asked, effect, rule, targets):
    decision = decide("llm.request", asked, who)
    assert (decision.effect, decision.rules) == (effect, (rule,))
    assert decision.obligations.get("targets") == targets


@pytest.mark.parametrize("mode, action, resource, effect", [
    ("ask", "command.exec", "ls", "deny"),
    ("ask", "file.write", "README.md", "deny"),
    ("ask", "file.read", "src/app.py", "allow"),
    ("architect", "file.write", "docs/design.md", "confirm"),
    ("architect", "file.write", "src/app.py", "deny"),
    ("architect", "file.write", "docs/../../etc/notes.md", "deny"),
    ("architect", "command.exec", "ls", "deny"),
    ("code", "command.exec", "ls", "allow"),
    ("debug", "file.read", "x", "deny"),
])
def test_modes_are_checked_before_rules(mode, action, resource, effect):
    decision = decide(action, resource, mode=mode)
    assert decision.effect == effect
    if effect == "deny":
        assert decision.rules == (f"mode:{mode}",)


def test_using_a_mode_the_policy_does_not_declare_is_denied():
    assert decide("mode.use", "architect").effect == "deny"  # default deny: no mode.use rule
    assert decide("mode.use", "debug").rules == ("mode:debug",)


def test_deny_outranks_approve_outranks_confirm_outranks_allow():
    rules = [Rule(id=f"r-{effect}", effect=effect, action="tool.call") for effect in STRICTNESS]
    for count in range(1, 5):
        policy = Policy(version=1, rules=rules[:count])
        decision = decide("tool.call", "a/b", engine=EffectivePolicy(CompiledPolicy(policy)))
        assert decision.effect == ["allow", "confirm", "approve", "deny"][count - 1]
        assert decision.rules == (f"r-{decision.effect}",)


def test_no_match_falls_back_to_the_action_default_then_the_policy_default():
    policy = Policy(version=1, default="confirm", defaults={"file.read": "allow"})
    engine = EffectivePolicy(CompiledPolicy(policy))
    assert decide("file.read", "a", engine=engine).rules == ("defaults.file.read",)
    assert decide("file.write", "a", engine=engine).effect == "confirm"
    assert decide("file.write", "a", engine=engine).rules == ("default",)


def override(kind, target, **params):
    return Override(id=len(kind), kind=kind, target=target, params=params, expires_at=NOW + timedelta(hours=2))


@pytest.mark.parametrize("active, action, resource, who, before, after", [
    (override("read_only", "team:platform"), "command.exec", "npm test", ALICE, "confirm", "deny"),
    (override("read_only", "team:platform"), "command.exec", "ls", ALICE, "allow", "allow"),
    (override("read_only", "team:payments"), "command.exec", "npm test", ALICE, "confirm", "confirm"),
    (override("read_only", "org"), "file.write", "a.txt", ALICE, "confirm", "deny"),
    (override("tighten_approvals", "org"), "tool.call", "tracker/create", ALICE, "approve", "approve"),
    (override("tighten_approvals", "user:alice@example.com"), "command.exec", "npm i", ALICE, "confirm", "approve"),
    (override("tighten_approvals", "org"), "command.exec", "rm -rf /", ALICE, "deny", "deny"),
    (override("disable_tool", "everything/ec*"), "tool.call", "everything/echo", ALICE, "allow", "deny"),
    (override("disable_server", "everything"), "tool.call", "everything/echo", CAROL, "allow", "deny"),
    (override("limit_workload", "org", denied_modes=["code"]), "mode.use", "code", ALICE, "deny", "deny"),
])
def test_overrides_change_decisions_until_they_expire(active, action, resource, who, before, after):
    engine = EffectivePolicy(ENGINE.compiled, (active,))
    assert decide(action, resource, who, engine=engine).effect == before  # no time given: none active
    during = decide(action, resource, who, engine=engine, now=NOW)
    assert during.effect == after
    if after != before:
        assert f"override:{active.id}" in during.rules
    assert decide(action, resource, who, engine=engine, now=NOW + timedelta(hours=3)).effect == before


def test_switch_profile_routes_to_the_fallback_and_limits_apply_to_llm_requests():
    engine = EffectivePolicy(ENGINE.compiled, (override("switch_profile", "dev-fast"),
                                               override("limit_workload", "team:platform", max_tokens=1000),
                                               override("scope_tasks", "org", max_requests=3)))
    decision = decide("llm.request", "dev-fast", engine=engine, now=NOW)
    assert decision.effect == "allow"
    assert decision.obligations == {"profile": "dev-fast", "targets": ["demo/echo"], "max_tokens": 1000,
                                    "task_max_requests": 3}
    assert decide("llm.request", "dev-fast", engine=engine, now=NOW, task_requests=3).effect == "deny"


def test_explain_says_why_each_rule_did_or_did_not_match():
    _, trace = ENGINE.explain(Request("tool.call", "tracker/delete_x", CAROL))
    by_rule = {line.rule: line for line in trace}
    assert by_rule["read-only-tools"].matched is False
    assert by_rule["read-only-tools"].why == "class is not read-only"
    assert by_rule["contractors-no-mutating-tools"].matched is True
    assert by_rule["destructive-tools-need-approval"].matched is True


# ---- properties -----------------------------------------------------------------------------

ACTION_RESOURCES = {
    "command.exec": st.sampled_from(["ls", "rm -rf /", "git push --force", "npm test", "ls && npm test",
                                     "cat x | grep y", "$X", "echo hi > f"]),
    "tool.call": st.sampled_from(["tracker/delete_x", "everything/echo", "a/b", "tracker/list"]),
    "llm.request": st.sampled_from(["dev-fast", "release-safe", "openai/gpt-5", "other"]),
    "file.write": st.sampled_from(["a.md", "src/x.py", "../y"]),
}
requests = st.sampled_from(sorted(ACTION_RESOURCES)).flatmap(
    lambda action: st.tuples(st.just(action), ACTION_RESOURCES[action], st.sampled_from([ALICE, CAROL]),
                             st.sampled_from([None, "code", "architect", "ask"])))
extra_rules = st.builds(
    lambda effect, action, pattern: Rule.model_validate(
        {"id": "extra", "effect": effect, "action": action,
         **({"match": {{"command.exec": "command", "tool.call": "tool", "llm.request": "profile",
                        "file.write": "path"}[action]: pattern}} if pattern else {})}),
    st.sampled_from(list(STRICTNESS)), st.sampled_from(sorted(ACTION_RESOURCES)),
    st.sampled_from([None, "*", "rm *", "ls*", "tracker/*", "dev-fast", "*.md"]))


def _with_rules(rules) -> EffectivePolicy:
    return EffectivePolicy(CompiledPolicy(DEMO.model_copy(update={"rules": tuple(rules)})))


@settings(max_examples=300, deadline=None)
@given(requests, extra_rules)
def test_adding_a_deny_rule_never_turns_a_decision_into_allow(request, rule):
    deny = rule.model_copy(update={"effect": "deny"})
    action, resource, who, mode = request
    before = decide(action, resource, who, mode=mode)
    after = decide(action, resource, who, engine=_with_rules([*DEMO.rules, deny]), mode=mode)
    assert STRICTNESS[after.effect] >= STRICTNESS[before.effect]


@settings(max_examples=300, deadline=None)
@given(requests, st.integers(min_value=0, max_value=len(DEMO.rules) - 1))
def test_removing_an_allow_rule_never_loosens(request, index):
    action, resource, who, mode = request
    kept = [rule for i, rule in enumerate(DEMO.rules) if not (i == index and rule.effect == "allow")]
    before = decide(action, resource, who, mode=mode)
    after = decide(action, resource, who, engine=_with_rules(kept), mode=mode)
    assert STRICTNESS[after.effect] >= STRICTNESS[before.effect]


command_parts = st.sampled_from(["ls", "rm -rf /", "npm test", "git status", "cat a", "git push --force x",
                                 "terraform destroy", "echo $(whoami)", "$X"])


@settings(max_examples=300, deadline=None)
@given(st.lists(command_parts, min_size=1, max_size=4), st.sampled_from([" && ", " || ", "; ", " | "]),
       extra_rules)
def test_a_compound_command_is_never_looser_than_its_strictest_part(parts, separator, rule):
    engine = _with_rules([*DEMO.rules, rule])
    line = decide("command.exec", separator.join(parts), engine=engine)
    each = [decide("command.exec", part, engine=engine).effect for part in parts]
    assert STRICTNESS[line.effect] >= STRICTNESS[strictest(*each)]


@settings(max_examples=200, deadline=None)
@given(requests, st.sampled_from(["read_only", "tighten_approvals", "disable_tool", "disable_server",
                                  "limit_workload", "scope_tasks", "switch_profile"]))
def test_an_override_never_loosens_a_decision(request, kind):
    target = {"disable_tool": "tracker/*", "disable_server": "everything", "switch_profile": "dev-fast"}.get(kind, "org")
    params = {"limit_workload": {"denied_modes": ["code"]}, "scope_tasks": {"max_requests": 1}}.get(kind, {})
    action, resource, who, mode = request
    before = decide(action, resource, who, mode=mode, now=NOW)
    engine = EffectivePolicy(ENGINE.compiled, (override(kind, target, **params),))
    after = decide(action, resource, who, engine=engine, mode=mode, now=NOW, task_requests=5)
    assert STRICTNESS[after.effect] >= STRICTNESS[before.effect]


@pytest.mark.parametrize("line", ["time rm -rf /", "echo $((1+1))", "ls $X", "   "])
def test_a_line_that_cannot_be_known_still_goes_through_the_mode_check(line):
    assert decide("command.exec", line, mode="ask").rules == ("mode:ask",)


def test_a_line_that_cannot_be_known_is_tightened_by_overrides_and_strict_defaults():
    engine = EffectivePolicy(ENGINE.compiled, (override("read_only", "org"),))
    assert decide("command.exec", "ls $X", engine=engine, now=NOW).effect == "deny"
    strict = EffectivePolicy(CompiledPolicy(Policy(version=1, default="deny")))
    assert decide("command.exec", "ls $X", engine=strict).effect == "deny"


def test_paths_are_normalised_before_matching():
    policy = Policy.model_validate({"version": 1, "default": "allow", "rules": [
        {"id": "no-etc", "effect": "deny", "action": "file.write", "match": {"path": "/etc/**"}}]})
    engine = EffectivePolicy(CompiledPolicy(policy))
    for path in ["/etc/passwd", "//etc/passwd", "/tmp/../etc/passwd", "///etc//x"]:
        assert decide("file.write", path, engine=engine).effect == "deny", path
    assert decide("command.exec", "cat x > //etc/passwd", engine=engine).effect == "deny"


@pytest.mark.parametrize("command, expected", [
    ("ls -la", "read-only"), ("git log --oneline", "read-only"), ("find . -name x", "read-only"),
    ("git diff --output=/etc/passwd", "mutating"), ("git log --ext-diff", "mutating"),
    ("git -c core.pager=sh status", "mutating"), ("sort -o /etc/passwd x", "mutating"),
    ("find . -delete", "mutating"), ("rg --pre=./x foo", "mutating"), ("env rm x", "mutating"),
    ("uniq a b", "mutating"), ("date -s 2020", "mutating"), ("npm test", "mutating"),
])
def test_command_classes(command, expected):
    from corral.policy.engine import command_class

    assert command_class(command) == expected


@pytest.mark.parametrize("line", [
    "{ ls; } > out.txt", "(cat x) >> ~/.bashrc", "for i in a; do ls; done > out.txt", '{ ls; } > "$(rm -rf /)"',
    "(ls) < <(echo PWNED)", "ls &>> out.txt", "ls <> out.txt", "ls >&2file", "git diff --output=/tmp/x",
    "git log -1 --format=x --output=/home/alice/.bashrc", "git difftool -y -x 'rm -rf /' HEAD", "./ls",
    "./bin/git status", "ls ${x:-$(rm -rf /)}", "grep x $HOME", "curl x | sh", "ls\rrm -rf /", "echo !!",
])
def test_lines_that_write_or_run_something_else_are_never_allowed(line):
    assert decide("command.exec", line).effect != "allow"


@pytest.mark.parametrize("line", [
    "echo / | xargs rm -rf", "find . -exec rm -rf {} +", "git -C . push --force", "git --no-pager push --force",
    "terraform -chdir=x destroy", "sudo -iu root -- rm -rf /", "env -iu X -- rm -rf /", "eval -- rm -rf /",
    "env -vS 'rm -rf /'", "env --split='rm -rf /'", "flock /tmp/l -c 'rm -rf /'", "runuser -u bob -- rm -rf /",
    "busybox rm -rf /", "bash <<< 'rm -rf /'", "rm -rf /; time true", "time rm -rf /", "rm -rf / && [[ -d x ]]",
    "git push --force; case x in y) ;; esac", "coproc rm -rf /", "ls ${x:-`rm -rf /`}",
])
def test_destructive_commands_are_denied_however_they_are_dressed(line):
    decision = decide("command.exec", line)
    assert decision.effect == "deny" and "no-destructive-commands" in decision.rules
