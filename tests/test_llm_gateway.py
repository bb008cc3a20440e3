"""The LLM gateway with the real `openai` and `anthropic` SDKs as clients, in front of a local
upstream that speaks both wire formats (tests/upstream.py) and the built-in mock: routing and
fallback, streams passed through, usage and cost, errors in each dialect, and the events."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from corral.identity.tokens import generate_key
from tests.conftest import BACKENDS, REDIS_URL, own_database, start_server, stop_server, unique
from tests.upstream import CACHED, USAGE_IN, USAGE_OUT, Behaviour, Upstream

SECRET = "sk-upstream-" + "x" * 24  # the provider's key: only Corral holds it

POLICY = """
version: 1
default: deny
defaults: {{command.exec: confirm, file.write: confirm, file.read: allow, tool.call: confirm}}
roles: [admin, approver, auditor, developer, contractor]
teams:
  contractors: {{roles: [contractor]}}
providers:
  primary: {{kind: openai, base_url: "{up}/primary/v1", api_key: "env:PRIMARY_KEY",
            prices: {{gpt-x: {{input: 1.0, output: 2.0, cache_read: 0.5}}}},
            health: {{min_requests: 1000}}}}  # tests fail it on purpose: it must not rest
  backup:  {{kind: openai, base_url: "{up}/backup/v1", api_key: "env:PRIMARY_KEY", health: {{min_requests: 1000}}}}
  shaky:   {{kind: openai, base_url: "{up}/shaky/v1", health: {{min_requests: 2, error_rate: 1.0, cooldown_s: 1}}}}
  slow:    {{kind: openai, base_url: "{up}/slow/v1", timeout_s: 1}}
  closed:  {{kind: openai, base_url: "http://127.0.0.1:9/v1", connect_timeout_s: 1}}
  claude:  {{kind: anthropic, base_url: "{up}/claude", api_key: "env:PRIMARY_KEY"}}
  nokey:   {{kind: openai, base_url: "{up}/nokey/v1", api_key: "env:CORRAL_TEST_UNSET_KEY"}}
  mock:    {{kind: mock}}
  broken:  {{kind: mock, mock: {{fail_status: 503}}}}
  shared:  {{kind: openai, base_url: "{up}/shared/v1", health: {{min_requests: 2, error_rate: 1.0, cooldown_s: 30}}}}
modes:
  code: {{tools: [read, edit, command, mcp]}}
  ask:  {{tools: [read, mcp]}}
profiles:
  main:     {{targets: [primary/gpt-x, backup/gpt-y]}}
  capped:   {{targets: [primary/gpt-x], max_tokens: 100}}
  sonnet:   {{targets: [claude/claude-sonnet-4-5]}}
  shaky:    {{targets: [shaky/s1, backup/gpt-y]}}
  slow:     {{targets: [slow/s1]}}
  refused:  {{targets: [closed/c1, backup/gpt-y]}}
  unkeyed:  {{targets: [nokey/n1, mock/echo]}}
  mocked:   {{targets: [mock/echo]}}
  down:     {{targets: [broken/b1]}}
  release:  {{targets: [primary/gpt-x]}}
  solo:     {{targets: [primary/gpt-x]}}
  budgeted: {{targets: [primary/gpt-x]}}
  limited:  {{targets: [mock/echo]}}
  single:   {{targets: [primary/gpt-x]}}
  tokens:   {{targets: [primary/gpt-x]}}
  replicas: {{targets: [shared/r1, backup/gpt-y]}}
  pricey:   {{targets: [primary/gpt-x]}}
budgets:
  - {{scope: "profile:budgeted", period: day, limit_usd: 0.00003, soft_at: 0.5}}
  - {{scope: "profile:pricey", period: month, limit_usd: 0.00002}}
limits:
  - {{scope: "profile:limited", rpm: 2}}
  - {{scope: "profile:single", concurrency: 1}}
  - {{scope: "profile:tokens", tpm: 20}}
rules:
  - id: no-recursive-deletes
    effect: deny
    action: command.exec
    match: {{command: ["rm -rf *"]}}
  - id: no-secrets-files
    effect: deny
    action: file.write
    match: {{path: ["**/.env"]}}
  - id: profiles-for-everyone
    effect: allow
    action: llm.request
    match: {{profile: [main, capped, sonnet, shaky, slow, refused, unkeyed, mocked, down, release, solo, budgeted,
                      limited, single, tokens, replicas, pricey]}}
  - id: contractors-not-on-release
    effect: deny
    action: llm.request
    when: {{team: contractors}}
    match: {{profile: [release]}}
"""


@pytest.fixture(scope="module")
def upstream():
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request, tmp_path_factory, upstream):
    """A Corral per backend; the PostgreSQL one shares its counters through Redis, as replicas do."""
    data_dir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    policy = data_dir / "policy.yaml"
    policy.write_text(POLICY.format(up=f"http://127.0.0.1:{upstream.port}"))
    admin_key = generate_key()
    shared = {"CORRAL_REDIS_URL": REDIS_URL, "CORRAL_REDIS_PREFIX": unique("corral-test")} \
        if request.param == "postgresql" else {}
    with own_database(request.param, data_dir) as database_url:
        env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_POLICY": str(policy), "PRIMARY_KEY": SECRET,
               "CORRAL_MAX_BODY_BYTES": str(256 * 1024), **shared}
        process, url, log_path = start_server(data_dir, database_url, env)
        try:
            yield {"url": url, "admin": admin_key, "log": log_path, "data_dir": data_dir, "env": env,
                   "database_url": database_url, "backend": request.param}
        finally:
            stop_server(process)


def user_key(gateway, teams=(), scopes=None):
    email = f"{unique('dev')}@example.com"
    headers = {"Authorization": f"Bearer {gateway['admin']}"}
    for team in teams:
        httpx.post(gateway["url"] + "/api/v1/teams", json={"name": team}, headers=headers, timeout=10)
    created = httpx.post(gateway["url"] + "/api/v1/users", json={"email": email, "roles": ["developer"],
                                                                  "teams": list(teams)}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    body = {"user": email} if scopes is None else {"user": email, "scopes": scopes}
    return email, httpx.post(gateway["url"] + "/api/v1/keys", json=body, headers=headers, timeout=10).json()["key"]


def oai(gateway, key=None, **headers):
    return openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=key or gateway["admin"], max_retries=0,
                         timeout=20, default_headers=headers or None)


def claude(gateway, key=None):
    return anthropic.Anthropic(base_url=gateway["url"], api_key=key or gateway["admin"], max_retries=0, timeout=20)


def events(gateway, request_id):
    """The llm.request event of one request (events are written in batches: wait for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = httpx.get(gateway["url"] + "/api/v1/events", params={"kind": "llm.request", "limit": 200},
                          headers={"Authorization": f"Bearer {gateway['admin']}"}, timeout=10).json()["events"]
        mine = [e for e in found if e["attributes"].get("request_id") == request_id]
        if mine:
            return mine[0]
        time.sleep(0.1)
    raise AssertionError(f"no llm.request event for request {request_id}")


ROO_TOOLS = [{"type": "function", "function": {
    "name": "execute_command", "description": "Run a CLI command", "strict": True,
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "cwd": {"type": ["string", "null"]}},
                   "required": ["command", "cwd"], "additionalProperties": False}}}]


# ---- OpenAI dialect --------------------------------------------------------------------------


def test_a_chat_completion_goes_to_the_profiles_first_target_with_the_providers_key(gateway, upstream):
    upstream.then("primary", Behaviour(text="the answer is 42"))
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "what is the answer?"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "the answer is 42"
    assert raw.headers["x-corral-target"] == "primary/gpt-x"
    seen = upstream.received["primary"][-1]
    assert seen.body["model"] == "gpt-x" and seen.body["messages"][0]["content"] == "what is the answer?"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert gateway["admin"] not in json.dumps(seen.headers)  # the Corral key never leaves Corral
    event = events(gateway, raw.headers["x-corral-request-id"])
    assert event["tokens_in"] == USAGE_IN and event["tokens_out"] == USAGE_OUT
    # policy price for gpt-x: $1/M input, $0.5/M cached input, $2/M output
    expected = ((USAGE_IN - CACHED) * 1.0 + CACHED * 0.5 + USAGE_OUT * 2.0) / 1_000_000
    assert event["cost_usd"] == pytest.approx(expected)
    assert event["decision"] == "allow" and event["outcome"] == "ok" and event["client"] == "openai-sdk"
    assert event["attributes"]["profile"] == "main" and event["attributes"]["target"] == "primary/gpt-x"


def test_a_roo_code_shaped_stream_with_tools_passes_through_and_is_read_on_the_way(gateway, upstream):
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "make test", "cwd": None})))
    client = oai(gateway, **{"X-Title": "Roo Code", "User-Agent": "RooCode/3.52.1", "x-corral-mode": "code"})
    with client.chat.completions.with_streaming_response.create(
            model="main", stream=True, stream_options={"include_usage": True}, temperature=0,
            tools=ROO_TOOLS, tool_choice="auto", parallel_tool_calls=True,
            messages=[{"role": "system", "content": "You are Roo"}, {"role": "user", "content": "run the tests"}]) as raw:
        request_id = raw.headers["x-corral-request-id"]
        chunks = list(raw.parse())
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(arguments) == {"command": "make test", "cwd": None}
    assert chunks[-1].usage.prompt_tokens == USAGE_IN
    assert upstream.received["primary"][-1].body["tools"] == ROO_TOOLS
    event = events(gateway, request_id)
    assert event["client"] == "roo-code" and event["mode"] == "code"
    assert event["attributes"]["tool_calls"] == ["execute_command"] and event["attributes"]["stream"] is True
    assert event["tokens_out"] == USAGE_OUT and event["attributes"]["stop_reason"] == "tool_calls"
    assert event["attributes"]["first_byte_ms"] > 0


def test_a_failing_first_target_falls_back_without_the_client_noticing(gateway, upstream):
    before = len(upstream.received["backup"])
    upstream.then("primary", Behaviour(kind="status", status=503, body={"error": {"message": "overloaded"}}))
    upstream.then("backup", Behaviour(text="served by the backup"))
    raw = oai(gateway).chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "served by the backup"
    assert raw.headers["x-corral-target"] == "backup/gpt-y" and raw.headers["x-corral-fallbacks"] == "primary/gpt-x"
    assert len(upstream.received["backup"]) == before + 1
    event = events(gateway, raw.headers["x-corral-request-id"])
    assert event["attributes"]["fallbacks"] == ["primary/gpt-x", "backup/gpt-y"]


@pytest.mark.parametrize("failure", [Behaviour(kind="html", status=502), Behaviour(kind="html", status=200),
                                     Behaviour(kind="status", status=500, body=None)])
def test_html_pages_and_empty_errors_from_a_target_count_as_failures(gateway, upstream, failure):
    upstream.then("primary", failure)
    upstream.then("backup", Behaviour(text="fine"))
    raw = oai(gateway).chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "fine" and raw.headers["x-corral-target"] == "backup/gpt-y"


def test_a_stream_falls_back_when_the_first_target_fails_before_the_first_byte(gateway, upstream):
    upstream.then("primary", Behaviour(kind="status", status=429, body={"error": {"message": "slow down"}}))
    upstream.then("backup", Behaviour(text="streamed from backup"))
    stream = oai(gateway).chat.completions.create(model="main", stream=True, messages=[{"role": "user", "content": "x"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() == "streamed from backup"


def test_a_stream_cut_in_the_middle_is_reported_to_the_client_and_never_replayed(gateway, upstream):
    before = len(upstream.received["backup"])
    upstream.then("primary", Behaviour(kind="cut", text="one two three"))
    stream = oai(gateway).chat.completions.create(model="main", stream=True, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIError, match="broke off"):
        for _ in stream:
            pass
    assert len(upstream.received["backup"]) == before  # not replayed elsewhere


def test_a_refused_connection_falls_back(gateway, upstream):
    raw = oai(gateway).chat.completions.with_raw_response.create(model="refused",
                                                                 messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-corral-target"] == "backup/gpt-y"


def test_a_target_whose_credential_is_not_set_is_skipped(gateway):
    raw = oai(gateway).chat.completions.with_raw_response.create(model="unkeyed",
                                                                 messages=[{"role": "user", "content": "ping"}])
    assert raw.headers["x-corral-target"] == "mock/echo"
    assert raw.parse().choices[0].message.content == "mock reply to: ping"


def test_a_hanging_target_times_out_with_a_clear_error(gateway, upstream):
    upstream.then("slow", Behaviour(kind="hang"))
    with pytest.raises(openai.APIStatusError) as caught:
        oai(gateway).chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 504
    assert "slow/s1 no answer within 1 s" in caught.value.message


def test_a_429_with_nowhere_else_to_go_is_a_429_with_retry_after(gateway, upstream):
    upstream.then("primary", Behaviour(kind="status", status=429, body={"error": {"message": "rate"}},
                                       headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as caught:
        oai(gateway).chat.completions.create(model="solo", messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["retry-after"]
    assert "primary/gpt-x answered 429" in caught.value.message


def test_a_providers_own_refusal_of_the_request_is_passed_on_not_retried(gateway, upstream):
    before = len(upstream.received["backup"])
    refusal = {"error": {"message": "messages: too long", "type": "invalid_request_error", "param": None,
                         "code": "context_length_exceeded"}}
    upstream.then("primary", Behaviour(kind="status", status=400, body=refusal))
    with pytest.raises(openai.BadRequestError) as caught:
        oai(gateway).chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "context_length_exceeded"
    assert len(upstream.received["backup"]) == before


def test_a_target_that_keeps_failing_rests_then_is_probed(gateway, upstream):
    upstream.then("shaky", Behaviour(kind="status", status=500), Behaviour(kind="status", status=500))
    for _ in range(2):
        oai(gateway).chat.completions.create(model="shaky", messages=[{"role": "user", "content": "x"}])
    asked = len(upstream.received["shaky"])
    raw = oai(gateway).chat.completions.with_raw_response.create(model="shaky", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-corral-target"] == "backup/gpt-y" and len(upstream.received["shaky"]) == asked
    time.sleep(1.2)  # the cool-down passes: the next request is the probe, and it succeeds
    raw = oai(gateway).chat.completions.with_raw_response.create(model="shaky", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-corral-target"] == "shaky/s1" and len(upstream.received["shaky"]) == asked + 1


def test_the_profiles_token_cap_wins(gateway, upstream):
    oai(gateway).chat.completions.create(model="capped", max_tokens=5000, messages=[{"role": "user", "content": "x"}])
    assert upstream.received["primary"][-1].body["max_tokens"] == 100
    oai(gateway).chat.completions.create(model="capped", messages=[{"role": "user", "content": "x"}])
    assert upstream.received["primary"][-1].body["max_tokens"] == 100


def test_a_client_that_goes_away_mid_stream_cancels_the_upstream_request(gateway, upstream):
    upstream.then("primary", Behaviour(kind="slow_stream", text=" ".join(["word"] * 40)))
    with httpx.stream("POST", gateway["url"] + "/v1/chat/completions", timeout=10,
                      headers={"Authorization": f"Bearer {gateway['admin']}"},
                      json={"model": "solo", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 10
    while "primary" not in upstream.disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "primary" in upstream.disconnected


# ---- Anthropic dialect -----------------------------------------------------------------------


CLAUDE_TOOLS = [{"name": "Bash", "description": "Run a shell command",
                 "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                  "required": ["command"]}}]


def test_a_claude_code_shaped_message_with_tools(gateway, upstream):
    upstream.then("claude", Behaviour(tool=("Bash", {"command": "git status"})))
    raw = claude(gateway).messages.with_raw_response.create(
        model="sonnet", max_tokens=1024, tools=CLAUDE_TOOLS, messages=[{"role": "user", "content": "status?"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14", "User-Agent": "claude-cli/2.1.197 (external, cli)"})
    message = raw.parse()
    assert message.content[0].type == "tool_use" and message.content[0].input == {"command": "git status"}
    seen = upstream.received["claude"][-1]
    assert seen.headers["x-api-key"] == SECRET and seen.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert seen.body["model"] == "claude-sonnet-4-5"
    event = events(gateway, raw.headers["x-corral-request-id"])
    assert event["client"] == "claude-code" and event["attributes"]["tool_calls"] == ["Bash"]
    # genai-prices: claude-sonnet-4-5 costs $3/M input and $15/M output; 20 in, 10 out
    assert event["cost_usd"] == pytest.approx((20 * 3 + 10 * 15) / 1_000_000)


def test_an_anthropic_stream_with_tools(gateway, upstream):
    upstream.then("claude", Behaviour(tool=("Bash", {"command": "ls -la"})))
    with claude(gateway).messages.stream(model="sonnet", max_tokens=100, tools=CLAUDE_TOOLS,
                                         messages=[{"role": "user", "content": "list"}]) as stream:
        message = stream.get_final_message()
    assert message.content[0].input == {"command": "ls -la"} and message.usage.output_tokens == 10


def test_the_base_url_answers_a_head_request_as_claude_code_sends_first(gateway):
    assert httpx.head(gateway["url"] + "/", timeout=10).status_code == 200


def test_the_mock_answers_both_dialects_streamed_or_not(gateway):
    text = "".join(c.choices[0].delta.content or "" for c in oai(gateway).chat.completions.create(
        model="mocked", stream=True, messages=[{"role": "user", "content": "hello mock"}]) if c.choices)
    assert text == "mock reply to: hello mock"
    message = claude(gateway).messages.create(model="mocked", max_tokens=50,
                                              messages=[{"role": "user", "content": "hello mock"}])
    assert message.content[0].text == "mock reply to: hello mock"
    with claude(gateway).messages.stream(model="mocked", max_tokens=50,
                                         messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "mock reply to: hi"
    counted = claude(gateway).messages.count_tokens(model="mocked", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens > 0


def test_an_injected_mock_fault_is_a_clear_upstream_error(gateway):
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(gateway).messages.create(model="down", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502 and "broken/b1 answered 503" in caught.value.message


# ---- refusals, in each dialect ---------------------------------------------------------------


def test_a_denied_profile_is_403_naming_the_rule_in_both_dialects(gateway):
    _, key = user_key(gateway)
    _, contractor = user_key(gateway, teams=("contractors",))
    assert oai(gateway, key).chat.completions.create(model="release", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.PermissionDeniedError, match="contractors-not-on-release"):
        oai(gateway, contractor).chat.completions.create(model="release", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.PermissionDeniedError, match="contractors-not-on-release"):
        claude(gateway, contractor).messages.create(model="release", max_tokens=5,
                                                    messages=[{"role": "user", "content": "x"}])
    listed = {m.id for m in oai(gateway, contractor).models.list()}
    assert "main" in listed and "release" not in listed


def test_unknown_models_and_bad_bodies_get_errors_in_the_dialect(gateway):
    with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
        oai(gateway).chat.completions.create(model="no-such-profile", messages=[{"role": "user", "content": "x"}])
    headers = {"Authorization": f"Bearer {gateway['admin']}", "content-type": "application/json"}
    for path, check in (("/v1/chat/completions", lambda b: b["error"]["type"] == "invalid_request_error"),
                        ("/v1/messages", lambda b: b["type"] == "error" and b["error"]["type"] == "invalid_request_error")):
        for body in (b"{not json", b"[]", b'{"messages": []}',
                     b'{"model": "main", "functions": [{"name": "f"}], "messages": []}'):
            response = httpx.post(gateway["url"] + path, content=body, headers=headers, timeout=10)
            assert response.status_code == 400 and check(response.json()), response.text
        response = httpx.post(gateway["url"] + path, content=b'{"model": "main", "x": "' + b"a" * 300_000 + b'"}',
                              headers=headers, timeout=10)
        assert response.status_code == 413 and check_413(path, response.json())


def test_a_wrong_method_is_refused_in_the_dialect(gateway):
    response = httpx.get(gateway["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {gateway['admin']}"},
                         timeout=10)
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"
    assert "takes POST" in response.json()["error"]["message"]
    response = httpx.get(gateway["url"] + "/v1/messages", timeout=10)
    assert response.status_code == 405 and response.json()["type"] == "error"


def check_413(path, body):
    return body["error"]["type"] == ("request_too_large" if path == "/v1/messages" else "invalid_request_error")


def test_bad_keys_and_narrow_keys_are_refused_in_the_dialect(gateway):
    with pytest.raises(openai.AuthenticationError):
        oai(gateway, generate_key()).chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        claude(gateway, "ck_forged").messages.create(model="main", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    _, read_only = user_key(gateway, scopes=["read"])
    with pytest.raises(openai.PermissionDeniedError, match="gateway"):
        oai(gateway, read_only).chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])


def test_the_provider_secret_is_never_in_the_log_or_the_database(gateway):
    log = Path(gateway["log"]).read_text()
    assert SECRET not in log and "Traceback" not in log
    stored = b"".join(path.read_bytes() for path in Path(gateway["data_dir"]).glob("corral.db*"))
    assert SECRET.encode() not in stored  # (on PostgreSQL the data dir holds no database: nothing to find)


# ---- agent awareness: a real Roo Code task, replayed -----------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "agents"  # copies of ../shared/fixtures/agents
ROO_HEADERS = ("HTTP-Referer", "X-Title", "User-Agent")


def user_events(gateway, email, count):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = httpx.get(gateway["url"] + "/api/v1/events", params={"user": email, "limit": 200},
                          headers={"Authorization": f"Bearer {gateway['admin']}"}, timeout=10).json()["events"]
        found = [e for e in found if not e["kind"].startswith("admin.")]
        if len(found) >= count:
            return sorted(found, key=lambda e: e["id"])
        time.sleep(0.1)
    raise AssertionError(f"only {len(found)} events for {email}: {[e['kind'] for e in found]}")


def test_a_recorded_roo_code_task_becomes_task_events_with_a_rollback(gateway, upstream):
    recorded = [json.loads(line) for line in (FIXTURES / "roo-code-cli" / "requests.jsonl").read_text().splitlines()]
    email, key = user_key(gateway)

    def replay(request):
        answer = request["answer"]["message"]["tool_calls"][0]["function"]
        upstream.then("primary", Behaviour(tool=(answer["name"], json.loads(answer["arguments"]))))
        headers = {name: request["headers"][name] for name in ROO_HEADERS}
        with httpx.stream("POST", gateway["url"] + "/v1/chat/completions", json={**request["body"], "model": "main"},
                          headers={**headers, "Authorization": f"Bearer {key}"}, timeout=20) as response:
            assert response.status_code == 200, response.read()
            body = b"".join(response.iter_bytes())
        assert answer["name"].encode() in body

    for request in recorded:  # ls, write hello.txt, attempt_completion
        replay(request)
    replay(recorded[1])  # the client goes back to the second request: a checkpoint restore
    happened = user_events(gateway, email, 13)
    kinds = [e["kind"] for e in happened if e["kind"] != "llm.request"]
    assert kinds == ["task.started", "tool.call", "command.exec", "tool.call", "tool.result", "tool.call",
                     "task.completed", "task.rolled_back", "tool.call"]
    assert len({e["task_id"] for e in happened}) == 1 and happened[0]["task_id"].startswith("fp-")
    assert all(e["client"] == "roo-code" and e["mode"] == "code" for e in happened)
    command = next(e for e in happened if e["kind"] == "command.exec")
    assert command["resource"] == "ls" and command["outcome"] == "ok" and command["attributes"]["exit_code"] == 0
    calls = [e["resource"] for e in happened if e["kind"] == "tool.call"]
    assert calls[:3] == ["ls", "write_to_file hello.txt", "attempt_completion"]
    rollback = next(e for e in happened if e["kind"] == "task.rolled_back")
    assert rollback["attributes"] == {"from_messages": 8, "to_messages": 5, "request_id": rollback["attributes"]["request_id"]}


def test_a_failing_or_timed_out_command_is_read_from_the_tool_result(gateway, upstream):
    email, key = user_key(gateway)
    opening = [{"role": "system", "content": "You are Roo"}, {"role": "user", "content": f"task {unique('t')}"}]
    history = [*opening]
    for index, (result, outcome) in enumerate([
            ("Command executed in terminal within working directory '/w'. Exit code: 2\nOutput:\nboom", "error"),
            ("The command was terminated after exceeding a user-configured 30s timeout.", "timeout")]):
        history += [{"role": "assistant", "content": "", "tool_calls": [{"id": f"call_{index}", "type": "function",
                     "function": {"name": "execute_command", "arguments": json.dumps({"command": f"make t{index}"})}}]},
                    {"role": "tool", "tool_call_id": f"call_{index}", "content": result}]
        oai(gateway, key).chat.completions.create(model="main", messages=history)
    commands = [e for e in user_events(gateway, email, 5) if e["kind"] == "command.exec"]
    assert [(e["resource"], e["outcome"]) for e in commands] == [("make t0", "error"), ("make t1", "timeout")]
    assert commands[0]["attributes"]["exit_code"] == 2


# ---- budgets and rate limits -----------------------------------------------------------------


def _fresh_minute():
    """Rate limits count per clock minute: start a test early in one."""
    if time.gmtime().tm_sec >= 50:
        time.sleep(61 - time.gmtime().tm_sec)


def test_a_budget_warns_then_refuses_with_the_spend_and_the_reset(gateway, upstream):
    email, key = user_key(gateway)
    ask = lambda: oai(gateway, key).chat.completions.create(  # noqa: E731
        model="budgeted", messages=[{"role": "user", "content": "x"}])
    ask()  # $0.0000235 of $0.00003: past the soft threshold (half)
    ask()  # started under the limit, so it is served; it ends past the limit
    with pytest.raises(openai.RateLimitError) as caught:
        ask()
    message = caught.value.message
    assert "budget exhausted: profile:budgeted" in message and "may spend $0.000030 per day and has spent $0.000047" in message
    assert "resets at " in message and caught.value.code == "budget_exceeded"
    reset = message.split("resets at ")[1][:20]
    assert reset.endswith("T00:00:00Z") and int(caught.value.response.headers["retry-after"]) <= 86400
    with pytest.raises(anthropic.RateLimitError, match="budget exhausted"):
        claude(gateway, key).messages.create(model="budgeted", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    crossings = [e for e in user_events(gateway, email, 6) if e["kind"].startswith("budget.")]
    assert [e["kind"] for e in crossings] == ["budget.soft_limit", "budget.exhausted"]
    assert crossings[1]["attributes"]["spent_usd"] == pytest.approx(2 * 23.5e-6)


def test_requests_per_minute_are_limited(gateway):
    _fresh_minute()
    _, key = user_key(gateway)
    for _ in range(2):
        oai(gateway, key).chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError, match=r"may make 2 requests per minute; try again in \d+ s"):
        oai(gateway, key).chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])


def test_tokens_per_minute_are_limited_once_used(gateway):
    _fresh_minute()
    for _ in range(2):  # 18 tokens each: the second starts under 20
        oai(gateway).chat.completions.create(model="tokens", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError, match="may use 20 tokens per minute and has used 36"):
        oai(gateway).chat.completions.create(model="tokens", messages=[{"role": "user", "content": "x"}])


def test_requests_in_flight_are_limited_and_the_seat_is_given_back(gateway, upstream):
    upstream.then("primary", Behaviour(kind="slow_stream", text="a b c d e"))
    stream = oai(gateway).chat.completions.create(model="single", stream=True, messages=[{"role": "user", "content": "x"}])
    first = next(iter(stream))
    assert first is not None
    with pytest.raises(openai.RateLimitError, match="1 requests in flight"):
        oai(gateway).chat.completions.create(model="single", messages=[{"role": "user", "content": "x"}])
    for _ in stream:
        pass
    oai(gateway).chat.completions.create(model="single", messages=[{"role": "user", "content": "x"}])


# ---- tools: offered by mode, calls judged on the way back ------------------------------------

ROO_CODE_TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
                  for name in ("read_file", "write_to_file", "execute_command", "attempt_completion", "use_mcp_tool")]


def test_a_mode_is_offered_only_its_tool_groups(gateway, upstream):
    raw = oai(gateway, **{"x-corral-mode": "ask"}).chat.completions.with_raw_response.create(
        model="main", tools=ROO_CODE_TOOLS, messages=[{"role": "user", "content": "what is this?"}])
    offered = [tool["function"]["name"] for tool in upstream.received["primary"][-1].body["tools"]]
    assert offered == ["read_file", "attempt_completion", "use_mcp_tool"]  # ask mode: read, mcp, and the always-there
    assert events(gateway, raw.headers["x-corral-request-id"])["attributes"]["tools_removed"] == [
        "write_to_file", "execute_command"]


def test_a_denied_command_call_becomes_text_for_the_model(gateway, upstream):
    email, key = user_key(gateway)
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "rm -rf /", "cwd": None})))
    completion = oai(gateway, key, **{"x-corral-mode": "code"}).chat.completions.create(
        model="main", tools=ROO_CODE_TOOLS, messages=[{"role": "user", "content": "clean up"}])
    message = completion.choices[0].message
    assert message.tool_calls is None and completion.choices[0].finish_reason == "stop"
    assert "Corral blocked this call to execute_command (rm -rf /)" in message.content
    assert "no-recursive-deletes" in message.content
    blocked = [e for e in user_events(gateway, email, 3) if e["outcome"] == "blocked"]
    assert len(blocked) == 1 and blocked[0]["kind"] == "tool.call" and blocked[0]["decision"] == "deny"
    assert blocked[0]["resource"] == "rm -rf /" and blocked[0]["attributes"]["rules"] == ["no-recursive-deletes"]


def test_a_denied_call_in_a_stream_becomes_text_and_allowed_calls_pass(gateway, upstream):
    upstream.then("primary", Behaviour(tool=("write_to_file", {"path": "app/.env", "content": "x"})),
                  Behaviour(tool=("write_to_file", {"path": "README.md", "content": "x"})))
    client = oai(gateway, **{"x-corral-mode": "code"})
    chunks = list(client.chat.completions.create(model="main", stream=True, tools=ROO_CODE_TOOLS,
                                                 messages=[{"role": "user", "content": "write"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Corral blocked this call to write_to_file (app/.env)" in text
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    chunks = list(client.chat.completions.create(model="main", stream=True, tools=ROO_CODE_TOOLS,
                                                 messages=[{"role": "user", "content": "write"}]))
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(arguments) == {"path": "README.md", "content": "x"}


def test_a_call_to_a_tool_the_mode_was_not_offered_is_blocked(gateway, upstream):
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "ls"})))
    completion = oai(gateway, **{"x-corral-mode": "ask"}).chat.completions.create(
        model="main", tools=ROO_CODE_TOOLS, messages=[{"role": "user", "content": "x"}])
    assert "execute_command was not offered to the model in this mode" in completion.choices[0].message.content


def test_a_denied_claude_code_bash_call_in_a_stream_becomes_a_text_block(gateway, upstream):
    upstream.then("claude", Behaviour(tool=("Bash", {"command": "rm -rf ~/project"})))
    with claude(gateway).messages.stream(model="sonnet", max_tokens=100, tools=CLAUDE_TOOLS,
                                         messages=[{"role": "user", "content": "clean"}]) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text"] and message.stop_reason == "end_turn"
    assert "Corral blocked this call to Bash (rm -rf ~/project)" in message.content[0].text
    upstream.then("claude", Behaviour(tool=("Bash", {"command": "rm -rf ~/project"})))
    whole = claude(gateway).messages.create(model="sonnet", max_tokens=100, tools=CLAUDE_TOOLS,
                                            messages=[{"role": "user", "content": "clean"}])
    assert whole.content[0].type == "text" and "no-recursive-deletes" in whole.content[0].text


# ---- OpenAI's Responses API (Codex-style clients, Roo's openai-native provider) --------------

RESPONSES_TOOLS = [{"type": "function", "name": "execute_command", "parameters": {"type": "object"}}]


def test_the_responses_api_passes_through_with_usage_and_the_task_from_session_id(gateway, upstream):
    upstream.then("primary", Behaviour(text="hi from responses"))
    session = unique("task")
    raw = oai(gateway, **{"session_id": session, "originator": "roo-code"}).responses.with_raw_response.create(
        model="main", input="say hi", instructions="be brief")
    assert raw.parse().output_text == "hi from responses"
    seen = upstream.received["primary"][-1]
    assert seen.path.endswith("/primary/v1/responses") and seen.body["model"] == "gpt-x"
    event = events(gateway, raw.headers["x-corral-request-id"])
    assert event["task_id"] == session and event["client"] == "roo-code"
    assert event["tokens_in"] == USAGE_IN and event["cost_usd"] == pytest.approx(23.5e-6)


def test_a_responses_stream_keeps_allowed_calls_and_blocks_denied_ones(gateway, upstream):
    client = oai(gateway, **{"x-corral-mode": "code"})
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "make test"})))
    with client.responses.stream(model="main", input="test it", tools=RESPONSES_TOOLS) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments) == {"command": "make test"}
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "rm -rf /srv"})))
    with client.responses.stream(model="main", input="clean", tools=RESPONSES_TOOLS) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["message"]
    assert "Corral blocked this call to execute_command (rm -rf /srv)" in final.output_text
    upstream.then("primary", Behaviour(tool=("execute_command", {"command": "rm -rf /srv"})))
    whole = client.responses.create(model="main", input="clean", tools=RESPONSES_TOOLS)
    assert [item.type for item in whole.output] == ["message"] and "no-recursive-deletes" in whole.output_text


def test_the_mock_speaks_the_responses_api(gateway):
    assert oai(gateway).responses.create(model="mocked", input="hello").output_text == "mock reply to: hello"
    with oai(gateway).responses.stream(model="mocked", input="hello there") as stream:
        assert stream.get_final_response().output_text == "mock reply to: hello there"


# ---- incident overrides reach the gateway ----------------------------------------------------


def override(gateway, kind, target, **params):
    created = httpx.post(gateway["url"] + "/api/v1/overrides", headers={"Authorization": f"Bearer {gateway['admin']}"},
                         json={"kind": kind, "target": target, "ttl_seconds": 600, "reason": "drill",
                               "params": params}, timeout=10)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def remove_override(gateway, override_id):
    httpx.delete(gateway["url"] + f"/api/v1/overrides/{override_id}",
                 headers={"Authorization": f"Bearer {gateway['admin']}"}, timeout=10)


def test_switch_profile_reroutes_to_a_fallback_at_once(gateway, upstream):
    switched = override(gateway, "switch_profile", "main", to="backup/gpt-y")
    try:
        raw = oai(gateway).chat.completions.with_raw_response.create(model="main",
                                                                     messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-corral-target"] == "backup/gpt-y"
        assert events(gateway, raw.headers["x-corral-request-id"])["cost_usd"] is None  # gpt-y has no known price
    finally:
        remove_override(gateway, switched)
    raw = oai(gateway).chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-corral-target"] == "primary/gpt-x"


def test_limit_workload_caps_tokens_and_takes_modes_away(gateway, upstream):
    email, key = user_key(gateway)
    limited = override(gateway, "limit_workload", f"user:{email}", max_tokens=7, denied_modes=["ask"])
    try:
        oai(gateway, key, **{"x-corral-mode": "code"}).chat.completions.create(
            model="main", max_tokens=500, messages=[{"role": "user", "content": "x"}])
        assert upstream.received["primary"][-1].body["max_tokens"] == 7
        with pytest.raises(openai.PermissionDeniedError, match="mode 'ask' is not available now"):
            oai(gateway, key, **{"x-corral-mode": "ask"}).chat.completions.create(
                model="main", messages=[{"role": "user", "content": "x"}])
    finally:
        remove_override(gateway, limited)


def test_scope_tasks_ends_a_task_past_its_requests(gateway):
    email, key = user_key(gateway)
    scoped = override(gateway, "scope_tasks", f"user:{email}", max_requests=2)
    try:
        client = oai(gateway, key, **{"x-corral-task": unique("task")})
        for _ in range(2):
            client.chat.completions.create(model="mocked", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.PermissionDeniedError, match="the task has made its 2 requests"):
            client.chat.completions.create(model="mocked", messages=[{"role": "user", "content": "x"}])
        oai(gateway, key, **{"x-corral-task": unique("task")}).chat.completions.create(
            model="mocked", messages=[{"role": "user", "content": "x"}])  # another task starts afresh
    finally:
        remove_override(gateway, scoped)


# ---- replicas share what must be exact -------------------------------------------------------


def test_replicas_share_target_health_and_budgets_through_redis(gateway, upstream, tmp_path):
    if gateway["backend"] != "postgresql":
        pytest.skip("replicas share a PostgreSQL database and Redis (the PostgreSQL run of this module)")
    signing_key = (gateway["data_dir"] / "signing.key").read_text().strip()
    process, url, _ = start_server(tmp_path / "replica", gateway["database_url"],
                                   {**gateway["env"], "CORRAL_SIGNING_KEY": signing_key})
    try:
        replica = {**gateway, "url": url}
        upstream.then("shared", Behaviour(kind="status", status=500), Behaviour(kind="status", status=500))
        for _ in range(2):  # the first replica sees the target fail twice: it rests
            oai(gateway).chat.completions.create(model="replicas", messages=[{"role": "user", "content": "x"}])
        asked = len(upstream.received["shared"])
        raw = oai(replica).chat.completions.with_raw_response.create(model="replicas",
                                                                     messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-corral-target"] == "backup/gpt-y" and len(upstream.received["shared"]) == asked

        _, key = user_key(gateway)
        oai(gateway, key).chat.completions.create(model="pricey", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError, match="budget exhausted: profile:pricey"):  # spent on the other one
            oai(replica, key).chat.completions.create(model="pricey", messages=[{"role": "user", "content": "x"}])
    finally:
        stop_server(process)


def test_a_recorded_cline_cli_task_becomes_task_events(gateway, upstream):
    recorded = [json.loads(line) for line in (FIXTURES / "cline-cli" / "requests.jsonl").read_text().splitlines()]
    email, key = user_key(gateway)
    for request in recorded:  # run_commands ["ls"], editor hello.txt, then a final answer without a tool
        message = request["answer"]["message"]
        if message.get("tool_calls"):
            function = message["tool_calls"][0]["function"]
            upstream.then("primary", Behaviour(tool=(function["name"], json.loads(function["arguments"]))))
        else:
            upstream.then("primary", Behaviour(text=message["content"]))
        headers = {"User-Agent": request["headers"]["User-Agent"], "Authorization": f"Bearer {key}"}
        with httpx.stream("POST", gateway["url"] + "/v1/chat/completions", json={**request["body"], "model": "main"},
                          headers=headers, timeout=20) as response:
            assert response.status_code == 200, response.read()
            response.read()
    happened = [e for e in user_events(gateway, email, 9) if e["kind"] != "llm.request"]
    assert [e["kind"] for e in happened] == ["task.started", "tool.call", "command.exec", "tool.call", "tool.result",
                                             "task.completed"]
    assert happened[1]["resource"] == "ls" and happened[2]["outcome"] == "ok"
    assert happened[3]["resource"].startswith("editor /home/dev/") and happened[3]["resource"].endswith("hello.txt")


# ---- streams shaped to slip a call past the gate ---------------------------------------------


def sse(*chunks, done=True, last_blank=True):
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    events = [b"data: " + json.dumps({**base, "choices": choices}).encode() for choices in chunks]
    raw = b"\n\n".join(events) + (b"\n\ndata: [DONE]" if done else b"")
    return raw + (b"\n\n" if last_blank else b"")


def call(index, name, arguments, call_id=None):
    return {"index": index, "id": call_id or f"call_{index}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def stream_through(gateway, tools=ROO_CODE_TOOLS):
    chunks = list(oai(gateway, **{"x-corral-mode": "code"}).chat.completions.create(
        model="main", stream=True, tools=tools, messages=[{"role": "user", "content": "x"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, calls, finishes


def test_a_denied_call_sharing_a_chunk_with_text_is_still_caught(gateway, upstream):
    upstream.then("primary", Behaviour(kind="raw", body=sse(
        [{"index": 0, "delta": {"content": "ok, cleaning", "tool_calls": [call(0, "execute_command", {"command": "rm -rf /"})]},
          "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])))
    text, calls, finishes = stream_through(gateway)
    assert calls == [] and "ok, cleaning" in text and "Corral blocked this call to execute_command" in text
    assert finishes == ["stop"]


def test_two_calls_in_one_chunk_are_judged_each(gateway, upstream):
    upstream.then("primary", Behaviour(kind="raw", body=sse(
        [{"index": 0, "delta": {"tool_calls": [call(0, "execute_command", {"command": "ls"}),
                                               call(1, "execute_command", {"command": "rm -rf /"})]},
          "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])))
    text, calls, finishes = stream_through(gateway)
    assert [json.loads(c.function.arguments) for c in calls] == [{"command": "ls"}]
    assert "(rm -rf /)" in text and finishes == ["tool_calls"]


def test_a_call_in_a_stream_that_ends_without_its_finish_is_still_judged(gateway, upstream):
    upstream.then("primary", Behaviour(kind="raw", body=sse(
        [{"index": 0, "delta": {"tool_calls": [call(0, "execute_command", {"command": "rm -rf /"})]},
          "finish_reason": None}], done=False, last_blank=False)))
    text, calls, _ = stream_through(gateway)
    assert calls == [] and "Corral blocked this call to execute_command" in text


def test_malformed_chunks_do_not_break_the_stream_or_pass_calls_unjudged(gateway, upstream):
    upstream.then("primary", Behaviour(kind="raw", body=sse(
        [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
        [{"index": 0, "delta": {"tool_calls": [{"index": None, "function": {"name": "execute_command",
                                                                             "arguments": [1, 2]}}]},
          "finish_reason": None}],
        [{"index": 0, "delta": "not a dict", "finish_reason": "tool_calls"}])))
    raw = httpx.post(gateway["url"] + "/v1/chat/completions", timeout=20,
                     headers={"Authorization": f"Bearer {gateway['admin']}", "x-corral-mode": "code"},
                     json={"model": "main", "stream": True, "tools": ROO_CODE_TOOLS,
                           "messages": [{"role": "user", "content": "x"}]})
    assert raw.status_code == 200 and '"tool_calls"' not in raw.text  # passed on as it came, less the call
    assert "could not read what this call would act on" in raw.text and raw.text.rstrip().endswith("[DONE]")


def test_usage_is_asked_for_and_kept_from_a_client_that_did_not_ask(gateway, upstream):
    raw = httpx.post(gateway["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {gateway['admin']}"},
                     json={"model": "main", "stream": True, "messages": [{"role": "user", "content": "x"}]}, timeout=20)
    assert upstream.received["primary"][-1].body["stream_options"] == {"include_usage": True}
    assert '"usage"' not in raw.text and raw.text.rstrip().endswith("data: [DONE]")
    event = events(gateway, raw.headers["x-corral-request-id"])
    assert event["tokens_in"] == USAGE_IN and event["cost_usd"] is not None


def test_a_provider_refusing_corrals_credential_falls_back_without_showing_its_answer(gateway, upstream):
    upstream.then("primary", Behaviour(kind="status", status=401, body={"error": {
        "message": "Incorrect API key provided: sk-upst***xxxx", "type": "invalid_request_error"}}))
    upstream.then("backup", Behaviour(text="from backup"))
    raw = oai(gateway).chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "from backup"
    upstream.then("primary", Behaviour(kind="status", status=401, body={"error": {"message": "sk-upst***xxxx"}}))
    with pytest.raises(openai.APIStatusError) as caught:
        oai(gateway).chat.completions.create(model="solo", messages=[{"role": "user", "content": "x"}])
    assert "refused Corral's credential" in caught.value.message and "sk-upst" not in caught.value.response.text
