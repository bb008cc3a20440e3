"""How fast Corral answers an agent's hook: Claude Code PreToolUse inputs posted one after
another to `/v1/hooks/claude-code`, timed on the server (the `Server-Timing` header: from the
request reaching the endpoint to its answer, body read, key checked, policy decided, ledger
appended when the decision lets something change) and round trip on the client. Beside them, in
the same run, the floor: `GET /healthz` round trips on the same connection.

Kinds of decision, each `--calls` times after warm-up:
- read:     Read of a workspace file (allowed, nothing to ledger)
- reader:   Bash `git status` (an allowed reader, nothing to ledger)
- change:   Bash `make build` (allowed by a rule added to the demo policy: a change Corral lets
            happen, so the answer waits until it is on the audit ledger, fsync included)
- ask:      Bash `npm test` (confirm: Claude Code asks; ledgered without holding the answer)
- deny:     Bash `rm -rf build` (denied by a rule; ledgered without holding the answer)

Target (2 cores): p99 <= 5 ms server-side for a decision. Corral runs `corral serve --demo` (the
demo policy plus the `make build` rule) on SQLite (WAL, synchronous=FULL: a ledger append waits for its fsync) in a temporary directory; all
traffic stays on 127.0.0.1 and the server is stopped at the end.

    python bench/hooks.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_machine = importlib.util.spec_from_file_location("machine", HERE / "machine.py")
assert _machine is not None and _machine.loader is not None
machine = importlib.util.module_from_spec(_machine)
_machine.loader.exec_module(machine)

import httpx  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from corral.identity.tokens import generate_key  # noqa: E402

CWD = "/home/dev/repo"
KINDS = {
    "read": ("Read", {"file_path": f"{CWD}/src/app.py"}, "allow"),
    "reader": ("Bash", {"command": "git status"}, "allow"),
    "change": ("Bash", {"command": "make build"}, "allow"),
    "ask": ("Bash", {"command": "npm test"}, "ask"),
    "deny": ("Bash", {"command": "rm -rf build"}, "deny"),
}
WARMUP = 100


def payload(tool: str, tool_input: dict[str, str], number: int) -> dict[str, object]:
    return {"session_id": "bench-session", "transcript_path": "/home/dev/.claude/projects/x.jsonl", "cwd": CWD,
            "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": tool_input, "tool_use_id": f"toolu_{number:08d}"}


def server_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    return float(timing.split("dur=", 1)[1])


def run_kind(client: httpx.Client, kind: str, calls: int) -> tuple[list[float], list[float]]:
    tool, tool_input, expected = KINDS[kind]
    server, total = [], []
    for number in range(WARMUP + calls):
        started = time.perf_counter()
        response = client.post("/v1/hooks/claude-code", json=payload(tool, tool_input, number))
        elapsed = (time.perf_counter() - started) * 1000
        decided = response.json()["hookSpecificOutput"]["permissionDecision"]
        if decided != expected:
            raise SystemExit(f"{kind}: expected {expected}, got {decided}: {response.text}")
        if number >= WARMUP:
            server.append(server_ms(response))
            total.append(elapsed)
    return server, total


def floor(client: httpx.Client, calls: int) -> list[float]:
    times = []
    for number in range(WARMUP + calls):
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        if number >= WARMUP:
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine.describe())
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory)
        port, admin = machine.free_port(), generate_key()
        log = data / "server.log"
        policy = yaml.safe_load((HERE.parent / "corral/policy/demo.yaml").read_text())
        policy["rules"].insert(0, {"id": "builds", "effect": "allow", "action": "command.exec",
                                   "match": {"command": "make build"}})
        (data / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        process = machine.start([str(Path(sys.executable).parent / "corral"), "serve", "--demo"],
                                {"CORRAL_DATA_DIR": str(data), "CORRAL_PORT": str(port), "CORRAL_ADMIN_KEY": admin,
                                 "CORRAL_DATABASE_URL": f"sqlite:///{data / 'corral.db'}",
                                 "CORRAL_POLICY": str(data / "policy.yaml")}, log)
        try:
            machine.wait_ready(port, "/readyz", process=process, log=log)
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as setup:
                setup.post("/api/v1/users", json={"email": "bench@example.com", "roles": ["developer"]})
                key = setup.post("/api/v1/keys", json={"user": "bench@example.com"}).json()["key"]
            rounds: dict[str, list[tuple[float, float, float, float]]] = {kind: [] for kind in [*KINDS, "floor"]}
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                for _ in range(args.rounds):
                    for kind in KINDS:
                        server, total = run_kind(client, kind, args.calls)
                        rounds[kind].append((machine.percentile(server, 0.5), machine.percentile(server, 0.99),
                                             machine.percentile(total, 0.5), machine.percentile(total, 0.99)))
                    base = floor(client, args.calls)
                    rounds["floor"].append((0.0, 0.0, machine.percentile(base, 0.5), machine.percentile(base, 0.99)))
        finally:
            machine.stop(process)
    print(f"{args.calls} calls per kind per round, {args.rounds} rounds; medians of the rounds (ms)")
    print(f"{'kind':<8} {'server p50':>10} {'server p99':>10} {'round trip p50':>15} {'round trip p99':>15}")
    for kind, values in rounds.items():
        median = [statistics.median(column) for column in zip(*values)]
        server = f"{median[0]:>10.3f} {median[1]:>10.3f}" if kind != "floor" else f"{'-':>10} {'-':>10}"
        print(f"{kind:<8} {server} {median[2]:>15.3f} {median[3]:>15.3f}")
    print("floor: GET /healthz on the same connection (the HTTP round trip without a decision)")
    print("target: server p99 <= 5 ms for a decision")


if __name__ == "__main__":
    main()
