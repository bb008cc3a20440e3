"""How much the MCP gateway costs on a tools/call: the same calls straight to an MCP server and
through Corral, in one run, side by side.

Prints the machine, then for each protocol mode the official SDK's client speaks (`legacy`: the
2025-11-25 initialize handshake and a session; `2026-07-28`: sessionless):
- tools/call round-trip latency p50/p99 of the read-only `echo` tool, one long-lived client
  session making the calls one after another (after warm-up calls), direct vs through Corral,
  as added milliseconds and as a ratio;
- calls per second with `--concurrency` clients (a session each) calling back to back.
Direct and Corral runs alternate over `--rounds` rounds (the order flips every round) and the
medians of the rounds are reported, because a small machine is noisy.

Target (2 cores): added p50 <= 2 ms.

The MCP server is tests/mcp_server.py over Streamable HTTP (the SDK's low-level Server on
uvicorn); Corral is `corral serve` on SQLite in a temporary directory, with that server in its
policy's mcp_servers (`trust_annotations: true`) and `tool.call` allowed; the caller holds a
developer's `gateway` key. The clients are the SDK's own (`mcp.Client` over
`streamable_http_client`), as an agent would use. All traffic stays on 127.0.0.1; every phase
is bounded in count and time, and both servers are stopped (their process groups) at the end.

    python bench/mcp.py [--calls 500] [--total 1000] [--concurrency 16] [--rounds 3] [--modes legacy,2026-07-28]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is bench/mcp.py: with bench/ on the path, `import mcp` would find it instead of the SDK.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
_machine = importlib.util.spec_from_file_location("machine", HERE / "machine.py")
assert _machine is not None and _machine.loader is not None
machine = importlib.util.module_from_spec(_machine)
_machine.loader.exec_module(machine)
describe, free_port, percentile, start, stop, wait_ready = (
    machine.describe, machine.free_port, machine.percentile, machine.start, machine.stop, machine.wait_ready)

import httpx  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from corral.identity.tokens import generate_key  # noqa: E402

SERVER_SCRIPT = HERE.parent / "tests" / "mcp_server.py"
MODES = ("legacy", "2026-07-28")
ARGUMENTS = {"text": "hello"}
WARMUP = 30
PHASE_LIMIT_S = 45.0  # no single measurement may take longer than this
BUDGET_S = 170.0  # rounds that would end after this are left out (the first always runs)

POLICY = """
version: 1
default: deny
defaults: {{tool.call: allow}}
mcp_servers:
  bench: {{url: "http://127.0.0.1:{port}/mcp", trust_annotations: true}}
"""


# ---- the clients: the official SDK's -----------------------------------------------------------


def connect(url: str, key: str | None, mode: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"} if key else {})
    return Client(streamable_http_client(url, http_client=http), mode=mode, cache=None, read_timeout_seconds=30)


async def echo(client: Client) -> None:
    result = await client.call_tool("echo", ARGUMENTS)
    if result.is_error:
        raise RuntimeError(f"echo answered with an error: {result.content}")


async def latencies(url: str, key: str | None, mode: str, calls: int) -> tuple[list[float], str]:
    """One session: warm-up calls, then `calls` calls one after another; each one's milliseconds,
    and the protocol version the session speaks."""
    async with asyncio.timeout(PHASE_LIMIT_S), connect(url, key, mode) as client:
        for _ in range(WARMUP):
            await echo(client)
        measured = []
        for _ in range(calls):
            begun = time.perf_counter()
            await echo(client)
            measured.append((time.perf_counter() - begun) * 1000)
        return measured, str(client.protocol_version)


async def calls_per_second(url: str, key: str | None, mode: str, concurrency: int, total: int) -> float:
    """`concurrency` sessions (opened and warmed first) making `total` calls between them, back to back."""
    async with asyncio.timeout(PHASE_LIMIT_S), AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url, key, mode)) for _ in range(concurrency)]
        await asyncio.gather(*(echo(client) for client in clients for _ in range(3)))
        each = max(1, total // concurrency)

        async def worker(client: Client) -> None:
            for _ in range(each):
                await echo(client)

        begun = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        return each * concurrency / (time.perf_counter() - begun)


# ---- the servers -------------------------------------------------------------------------------










def start_mcp_server(scratch: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = scratch / "mcp-server.log"
    process = start([sys.executable, str(SERVER_SCRIPT), "--http", str(port)], {}, log)
    wait_ready(port, "/mcp", 60, process, log)
    return process, port


def start_corral(scratch: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int, str]:
    """`corral serve` on SQLite with the MCP server in its policy; a developer's gateway key."""
    port, admin = free_port(), generate_key()
    (scratch / "policy.yaml").write_text(POLICY.format(port=upstream))
    log = scratch / "corral.log"
    process = start([str(Path(sys.executable).parent / "corral"), "serve"], {
        "CORRAL_DATA_DIR": str(scratch / "corral"), "CORRAL_DATABASE_URL": f"sqlite:///{scratch / 'corral.db'}",
        "CORRAL_PORT": str(port), "CORRAL_ADMIN_KEY": admin, "CORRAL_POLICY": str(scratch / "policy.yaml")}, log)
    wait_ready(port, "/readyz", 60, process, log)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin}"},
                      timeout=10) as api:
        created = api.post("/api/v1/users", json={"email": "bench@example.com", "roles": ["developer"]})
        created.raise_for_status()
        key = api.post("/api/v1/keys", json={"user": "bench@example.com", "scopes": ["gateway"]})
        key.raise_for_status()
    return process, port, key.json()["key"]


# ---- the run -----------------------------------------------------------------------------------




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per latency run (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the calls/s run (default 16)")
    parser.add_argument("--total", type=int, default=1000, help="calls in each calls/s run (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="direct/Corral alternations (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"protocol modes (default {','.join(MODES)})")
    arguments = parser.parse_args()
    modes = [mode.strip() for mode in arguments.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode {unknown[0]!r}; the modes are {', '.join(MODES)}")

    print(describe())
    print(f"tools/call `echo` (read-only) over Streamable HTTP with the mcp SDK's client: {arguments.calls} "
          f"sequential calls on one session after {WARMUP} warm-up calls (latency); {arguments.total} calls from "
          f"{arguments.concurrency} concurrent sessions (calls/s); {arguments.rounds} rounds alternating direct and "
          "Corral, medians of the rounds\n", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corral-bench-mcp-") as scratch_name:
        scratch = Path(scratch_name)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            upstream, up_port = start_mcp_server(scratch)
            servers.append(upstream)
            corral, corral_port, key = start_corral(scratch, up_port)
            servers.append(corral)
            targets = {"direct": (f"http://127.0.0.1:{up_port}/mcp", None),
                       "Corral": (f"http://127.0.0.1:{corral_port}/mcp/bench", key)}
            # results[mode][target] -> per round: (p50, p99, calls/s)
            results: dict[str, dict[str, list[tuple[float, float, float]]]] = {
                mode: {name: [] for name in targets} for mode in modes}
            protocols: dict[str, set[str]] = {mode: set() for mode in modes}
            rounds_started = time.perf_counter()
            for round_ in range(arguments.rounds):
                spent = time.perf_counter() - started
                if round_ and spent + (time.perf_counter() - rounds_started) / round_ > BUDGET_S:
                    print(f"  (rounds {round_ + 1}-{arguments.rounds} left out: they would end after "
                          f"{BUDGET_S:.0f} s)", flush=True)
                    break
                order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for mode in modes:
                    for name in order:
                        url, credential = targets[name]
                        measured, protocol = asyncio.run(latencies(url, credential, mode, arguments.calls))
                        protocols[mode].add(protocol)
                        rate = asyncio.run(calls_per_second(url, credential, mode, arguments.concurrency,
                                                            arguments.total))
                        p50, p99 = statistics.median(measured), percentile(measured, 0.99)
                        results[mode][name].append((p50, p99, rate))
                        print(f"  round {round_ + 1} {mode:10} {name:6}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                              f"{rate:6.0f} calls/s", flush=True)
            if corral.poll() is not None or upstream.poll() is not None:
                raise RuntimeError("a server exited during the run")
        finally:
            for process in reversed(servers):
                stop(process)

    print(f"\nmedians of {len(results[modes[0]]['direct'])} rounds:")
    worst = -math.inf
    for mode in modes:
        print(f"  mode={mode} ({'with a session' if mode == 'legacy' else 'sessionless'}; protocol "
              f"{', '.join(sorted(protocols[mode]))}):")
        medians = {name: tuple(statistics.median(run[i] for run in runs) for i in range(3))
                   for name, runs in results[mode].items()}
        direct = medians["direct"]
        for name, (p50, p99, rate) in medians.items():
            added = "" if name == "direct" else (
                f"   added p50 {p50 - direct[0]:+.2f} ms, p99 {p99 - direct[1]:+.2f} ms ({p50 / direct[0]:.2f}x p50,"
                f" {rate / direct[2]:.2f}x calls/s)")
            print(f"    {name:6}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:6.0f} calls/s "
                  f"({arguments.concurrency} clients){added}")
        pairs = [corral[0] - plain[0] for corral, plain in zip(results[mode]["Corral"], results[mode]["direct"])]
        print(f"    added p50 round by round (each pair run back to back): "
              f"{'  '.join(f'{pair:+.2f}' for pair in pairs)} ms; their median {statistics.median(pairs):+.2f} ms")
        worst = max(worst, medians["Corral"][0] - direct[0])
    print(f"\ntarget (2 cores): added p50 <= 2 ms; here ({os.cpu_count()} cpus) the worst mode adds "
          f"{worst:.2f} ms: {'met' if worst <= 2 else 'NOT met'}")
    print(f"(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
