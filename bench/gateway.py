"""How much the LLM gateway costs on the path: the same load straight to a local upstream and
through Corral, in one run, side by side.

Prints the machine, then for non-streaming and streaming chat completions:
- latency p50/p99 at a fixed rate (default 500 requests/s), direct vs through Corral, as added
  milliseconds and as a ratio;
- maximum throughput with 64 connections sending back to back;
and Corral's resident memory with 1,000 streams open at once. When the LiteLLM proxy can be
installed (into bench/.litellm-venv, by this script; not a project dependency) the same load runs
through it too, printed beside Corral.

Targets (issue 5, 2 cores): added p50 <= 1 ms and p99 <= 5 ms at 500 requests/s; >= 1,500
requests/s through one process; RSS <= 200 MB with 1,000 open streams.

The upstream is a minimal ASGI app on uvicorn (uvloop, httptools) that answers at once; the load
generator speaks HTTP/1.1 on raw asyncio streams, so the client costs as little as it can. All
traffic stays on 127.0.0.1; every phase is bounded in count and time.

    python bench/gateway.py [--rate 500] [--seconds 10] [--quick] [--no-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, free_port, percentile, raise_file_limit, start, stop, wait_ready  # noqa: E402

CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
CONNECTIONS = 64
OPEN_STREAMS = 1000


# ---- the upstream: a model that answers at once ----------------------------------------------

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}).encode()


def _chunks() -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-x"}
    words = ["Hello!", " How", " can", " I", " help", " you", " today", "?"]
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]} for word in words]
    out += [{**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}]
    return [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in out] + [b"data: [DONE]\n\n"]


CHUNKS = _chunks()


async def upstream_app(scope, receive, send):  # noqa: ANN001, ANN201 - a raw ASGI app
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body or b"{}")
    if not request.get("stream"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": COMPLETION})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    slow = request.get("user") == "slow"  # the open-streams test: a chunk a second, for a minute at most
    for index, chunk in enumerate(CHUNKS):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if slow and index < 60:
            await asyncio.sleep(1.0)
    await send({"type": "http.response.body", "body": b""})


def run_upstream(port: int) -> None:
    import uvicorn

    raise_file_limit()
    uvicorn.run(upstream_app, host="127.0.0.1", port=port, log_level="error", loop="uvloop", http="httptools",
                access_log=False, backlog=4096)


# ---- a lean HTTP/1.1 client on asyncio streams -------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> int:
        """One request; the response read to its end; its status."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        if headers.get(b"transfer-encoding", b"").strip() == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        else:  # neither: the body ends when the server closes the connection
            await self.reader.read()
            raise ConnectionResetError("the server closed the connection after its answer")
        return status

    async def first_chunk(self, raw: bytes) -> int:
        """Send a streaming request and wait for its headers and first chunk only."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
        await self.reader.readexactly(size + 2)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


def request_bytes(port: int, path: str, body: dict, key: str | None) -> bytes:
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", "User-Agent: corral-bench"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def fixed_rate(port: int, raw: bytes, rate: int, seconds: float) -> tuple[list[float], int, float]:
    """Requests started on a schedule of `rate` per second (open loop); their latencies in ms,
    the failures, and the rate achieved."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    failures = 0
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one() -> None:
        nonlocal failures
        connection = await idle.get()
        begun = time.perf_counter()
        try:
            status = await asyncio.wait_for(connection.send(raw), 30)
        except Exception:  # any failure costs this request, never the connection pool
            failures += 1
            connection.close()
            idle.put_nowait(await Connection.open(port))
            return
        latencies.append((time.perf_counter() - begun) * 1000)
        failures += status != 200
        idle.put_nowait(connection)

    tasks = []
    for index in range(total):
        delay = started + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - started
    while not idle.empty():
        idle.get_nowait().close()
    return latencies, failures, total / elapsed


async def max_throughput(port: int, raw: bytes, seconds: float) -> tuple[float, int]:
    done = failures = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, failures
        connection = await Connection.open(port)
        while time.perf_counter() < deadline:
            try:
                status = await asyncio.wait_for(connection.send(raw), 30)
            except Exception:
                failures += 1
                connection.close()
                connection = await Connection.open(port)
                continue
            done += 1
            failures += status != 200
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return done / (time.perf_counter() - started), failures


async def open_streams(port: int, raw: bytes, count: int, pid: int) -> tuple[int, float]:
    """Open `count` streams at once; how many got their first chunk, and the server's RSS then."""
    connections: list[Connection] = []
    opened = 0
    try:
        for first in range(0, count, 100):  # connect in waves: a listen backlog is finite
            batch = [await Connection.open(port) for _ in range(min(100, count - first))]
            connections += batch
            results = await asyncio.gather(*(asyncio.wait_for(c.first_chunk(raw), 30) for c in batch),
                                           return_exceptions=True)
            opened += sum(1 for r in results if r == 200)
        return opened, rss_mb(pid)
    finally:
        for connection in connections:
            connection.close()


# ---- the servers under test ------------------------------------------------------------------












def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


POLICY = """
version: 1
default: deny
providers:
  up: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: "env:BENCH_UPSTREAM_KEY"}}
profiles:
  bench: {{targets: [up/gpt-x]}}
rules:
  - {{id: bench, effect: allow, action: llm.request, match: {{profile: [bench]}}}}
"""


def start_corral(scratch: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int, str]:
    from corral.identity.tokens import generate_key

    port, key = free_port(), generate_key()
    (scratch / "policy.yaml").write_text(POLICY.format(port=upstream))
    process = start([str(Path(sys.executable).parent / "corral"), "serve"], {
        "CORRAL_DATA_DIR": str(scratch / "corral"), "CORRAL_PORT": str(port), "CORRAL_ADMIN_KEY": key,
        "CORRAL_POLICY": str(scratch / "policy.yaml"), "BENCH_UPSTREAM_KEY": "sk-bench"}, scratch / "corral.log")
    wait_ready(port, "/healthz")
    return process, port, key


def start_litellm(scratch: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int, str] | str:
    """LiteLLM's proxy in a virtualenv of its own, or why it is not available."""
    venv = HERE / ".litellm-venv"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True,
                           capture_output=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as error:
            return f"could not install litellm[proxy]: {type(error).__name__}"
    port, key = free_port(), "sk-bench-master"
    config = scratch / "litellm.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": "bench", "litellm_params": {
            "model": "openai/gpt-x", "api_base": f"http://127.0.0.1:{upstream}/v1", "api_key": "sk-bench"}}],
        "general_settings": {"master_key": key}, "litellm_settings": {"telemetry": False}}))
    process = start([str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"],
                    {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}, scratch / "litellm.log")
    try:
        wait_ready(port, "/health/liveliness", 180)
    except RuntimeError as error:
        stop(process)
        return str(error)
    return process, port, key


# ---- the run ---------------------------------------------------------------------------------




def measure(port: int, key: str | None, path: str, stream: bool, rate: int, seconds: float) -> dict[str, float]:
    raw = request_bytes(port, path, {**CHAT, "stream": stream, **({"stream_options": {"include_usage": True}}
                                                                    if stream else {})}, key)
    asyncio.run(fixed_rate(port, raw, min(rate, 200), 1.0))  # warm up
    latencies, failed, achieved = asyncio.run(fixed_rate(port, raw, rate, seconds))
    throughput, failed_max = asyncio.run(max_throughput(port, raw, min(seconds, 5.0)))
    return {"p50": statistics.median(latencies or [math.nan]), "p99": percentile(latencies, 0.99),
            "rate": achieved, "failed": failed + failed_max, "max": throughput}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="3 s per phase, 200 open streams")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # the upstream's own process
    arguments = parser.parse_args()
    if arguments.upstream:
        run_upstream(arguments.upstream)
        return
    raise_file_limit()
    seconds = 3.0 if arguments.quick else arguments.seconds
    streams = 200 if arguments.quick else OPEN_STREAMS
    print(describe())
    print(f"load: {arguments.rate} requests/s for {seconds:g} s over {CONNECTIONS} keep-alive connections; "
          f"max throughput: {CONNECTIONS} connections back to back\n")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        up_port = free_port()
        upstream = start([sys.executable, __file__, "--upstream", str(up_port)], {}, scratch / "upstream.log")
        servers: list[subprocess.Popen[bytes]] = [upstream]
        try:
            wait_ready(up_port, "/")
            corral, corral_port, corral_key = start_corral(scratch, up_port)
            servers.append(corral)
            targets = [("direct", up_port, None, "/v1/chat/completions"),
                       ("Corral", corral_port, corral_key, "/v1/chat/completions")]
            litellm = None if arguments.no_litellm else start_litellm(scratch, up_port)
            if isinstance(litellm, tuple):
                servers.append(litellm[0])
                targets.append(("LiteLLM", litellm[1], litellm[2], "/v1/chat/completions"))
            for stream in (False, True):
                print(f"{'streaming' if stream else 'non-streaming'} chat completions:")
                results = {name: measure(port, key, path, stream, arguments.rate, seconds)
                           for name, port, key, path in targets}
                direct = results["direct"]
                for name, figures in results.items():
                    added = "" if name == "direct" else (
                        f"  added p50 {figures['p50'] - direct['p50']:+.2f} ms, p99 {figures['p99'] - direct['p99']:+.2f} ms"
                        f" ({figures['p50'] / direct['p50']:.1f}x)")
                    print(f"  {name:8} p50 {figures['p50']:6.2f} ms  p99 {figures['p99']:6.2f} ms at "
                          f"{figures['rate']:5.0f}/s   max {figures['max']:6.0f} requests/s"
                          f"{'  FAILED ' + str(int(figures['failed'])) if figures['failed'] else ''}{added}")
                print()
            print(f"memory with {streams} streams open at once (each a chunk a second):")
            for name, port, key, path in targets[1:]:
                pid = corral.pid if name == "Corral" else servers[-1].pid
                idle = rss_mb(pid)
                raw = request_bytes(port, path, {**CHAT, "stream": True, "user": "slow"}, key)
                opened, loaded = asyncio.run(open_streams(port, raw, streams, pid))
                print(f"  {name:8} RSS idle {idle:6.1f} MB, with {opened}/{streams} open {loaded:6.1f} MB")
            if isinstance(litellm, str):
                print(f"\nLiteLLM: not run ({litellm})")
        finally:
            for process in reversed(servers):
                stop(process)
    print("\ntargets (2 cores): added p50 <= 1 ms, p99 <= 5 ms at 500/s; >= 1,500 requests/s through Corral; "
          "RSS <= 200 MB with 1,000 open streams")


if __name__ == "__main__":
    main()
