"""The policy file: the issue's example validates, and every mistake is reported as
FILE:LINE:COL with what is wrong; secrets never get in."""

from pathlib import Path

import pytest

from corral.policy.schema import PolicyError, load_policy

DEMO_TEXT = (Path(__file__).parent.parent / "corral/policy/demo.yaml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, "p.yaml")
    return caught.value.lines()


def test_the_example_policy_validates():
    policy = load_policy(DEMO_TEXT)
    assert [rule.id for rule in policy.rules][:2] == ["no-destructive-commands", "read-only-commands"]
    assert policy.approvals.sections["providers"].approvers == ("team:security",)
    assert "sre" in policy.roles and "admin" in policy.roles


@pytest.mark.parametrize("text, expected", [
    ("version: 1\ndefault: maybe\n", "p.yaml:2:10: default: Input should be 'allow', 'confirm', 'approve' or 'deny'"),
    ("version: 2\n", "p.yaml:1:10: version: Input should be 1"),
    ("version: 1\nrule: []\n", "p.yaml:2:1: rule: unknown key 'rule'"),
    ("version: 1\nversion: 1\n", "p.yaml:2:1: version: 'version' is given twice"),
    ("version: 1\nrules: [\n", "p.yaml:3:1: not valid YAML"),
    ("- a\n", "p.yaml:1:1: a policy is a mapping"),
    ("version: 1\nrules:\n  - id: x\n    effect: allow\n    action: command.exec\n    match: {tool: a/b}\n",
     "p.yaml:6:19: rules[0].match.tool: `tool` never matches a command.exec action (it is for tool.call)"),
    ("version: 1\nrules:\n  - {id: a, effect: deny, action: tool.call}\n  - {id: a, effect: allow, action: tool.call}\n",
     "p.yaml:4:10: rules[1].id: the rule id 'a' is used twice"),
    ("version: 1\nrules:\n  - {id: a, effect: deny, action: tool.call, when: {role: wizard}}\n",
     "p.yaml:3:59: rules[0].when.role: unknown role 'wizard'; declare it in `roles`"),
    ("version: 1\nproviders: {}\nprofiles:\n  p: {targets: [nope/m]}\n", "p.yaml:4:17: profiles.p.targets[0]: no provider named 'nope'"),
    ("version: 1\napprovals: {approvers: bob}\n", "p.yaml:2:24: approvals.approvers[0]: an approver is role:NAME"),
    ("version: 1\napprovals: {sections: {prose: {}}}\n", "p.yaml:2:24: approvals.sections.prose: 'prose' is not a section"),
    ("version: 1\nmcp_servers:\n  x: {command: a, url: 'http://b'}\n", "p.yaml:3:6: mcp_servers.x: give either `command`"),
    ("version: 1\ntools: [{match: ghost/*, class: read-only}]\n", "p.yaml:2:17: tools[0].match: no MCP server named 'ghost'"),
    ("version: 1\nmcp_servers:\n  a__b: {command: x}\n", "p.yaml:3:3: mcp_servers.a__b: 'a__b': a server name may not"),
    ("version: 1\nmcp_servers:\n  a: {command: x}\nread_only_alternatives: {a: b}\n",
     "p.yaml:4:29: read_only_alternatives.a: no MCP server named 'b'"),
    ("version: 1\nmcp_servers:\n  a: {command: x, pinning: sometimes}\n", "p.yaml:3:28: mcp_servers.a.pinning: Input"),
])
def test_mistakes_are_reported_where_they_are(text, expected):
    assert any(line.startswith(expected) for line in problems(text)), problems(text)


@pytest.mark.parametrize("value", ["sk-proj-abcdefghijklmnopqrstuvwx", "ghp_" + "a" * 36, "AKIAABCDEFGHIJKLMNOP"])
def test_secret_values_are_refused_wherever_they_are(value):
    text = f"version: 1\nrules:\n  - id: a\n    effect: deny\n    action: command.exec\n    description: '{value}'\n"
    assert any("looks like a secret" in line and line.startswith("p.yaml:6:") for line in problems(text))


def test_provider_keys_must_be_env_references():
    text = "version: 1\nproviders:\n  o: {kind: openai, api_key: hunter2}\n"
    assert problems(text) == ["p.yaml:3:30: providers.o.api_key: write env:NAME (the environment variable that "
                              "holds the secret), never the value"]
    text = "version: 1\nmcp_servers:\n  s: {url: 'http://x', headers: {Authorization: Bearer abc}}\n"
    assert "Authorization looks like a secret" in problems(text)[0]


def test_every_problem_is_reported_at_once():
    text = "version: 1\ndefault: maybe\nroles: [BadRole]\nrules: [{id: x, effect: nope, action: tool.call}]\n"
    assert [line.split(":")[1] for line in problems(text)] == ["2", "3", "4"]


def test_every_yaml_example_in_the_policy_doc_loads():
    import re

    doc = (Path(__file__).parent.parent / "docs/policy.md").read_text()
    examples = re.findall(r"^```yaml\n(.*?)^```", doc, re.S | re.M)
    assert len(examples) >= 3
    for example in examples:
        load_policy(example, "docs/policy.md")
    assert examples[0] == DEMO_TEXT.split("\n", 2)[2]  # the doc shows the demo policy, comments and all


def test_the_issue_example_validates_verbatim():
    policy = load_policy((Path(__file__).parent / "policies/issue-3-example.yaml").read_text(), "example.yaml")
    assert len(policy.rules) == 7 and set(policy.profiles) == {"dev-fast", "release-safe"}
