"""How fast `corral serve` is ready, and what authentication costs per request.

Prints the machine, then medians side by side with a baseline in the same run:
- start-up to a 200 from /readyz: a minimal FastAPI app on uvicorn (baseline), Corral's first
  start on an empty SQLite data dir (migrations, admin key, demo data), and a restart;
- request latency: /healthz (no auth, baseline) vs /api/v1/whoami (key lookup) on loopback.
Bounded: a few starts and a few hundred requests to 127.0.0.1, then it stops by itself.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from machine import describe

CORRAL = str(Path(sys.executable).parent / "corral")
STARTS = 5
REQUESTS = 300
BASELINE_APP = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/readyz")
def ready():
    return {"status": "ready"}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_to_ready(command: list[str], env: dict[str, str], port: int, cwd: str | None = None) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.01)
            if time.perf_counter() - started > 60:
                raise RuntimeError("not ready after 60 s")
    finally:
        process.terminate()
        process.wait(timeout=15)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f} ms"


def main() -> None:
    print(describe())
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "baseline_app.py").write_text(BASELINE_APP)
        baseline, cold, warm = [], [], []
        for run in range(STARTS):
            port = free_port()
            baseline.append(time_to_ready(
                [sys.executable, "-m", "uvicorn", "baseline_app:app", "--port", str(port), "--log-level", "warning"],
                base_env, port, cwd=scratch))
            data = Path(scratch, f"data{run}")
            env = {**base_env, "CORRAL_DATA_DIR": str(data), "CORRAL_PORT": str(port)}
            cold.append(time_to_ready([CORRAL, "serve", "--demo"], env, port))
            warm.append(time_to_ready([CORRAL, "serve", "--demo"], env, port))
        print(f"\nstart-up to ready, median of {STARTS}:")
        print(f"  minimal FastAPI app on uvicorn (baseline) {median_ms(baseline)}")
        print(f"  corral serve --demo, first start           {median_ms(cold)}  "
              f"({statistics.median(cold) / statistics.median(baseline):.2f}x baseline)")
        print(f"  corral serve --demo, restart               {median_ms(warm)}  "
              f"({statistics.median(warm) / statistics.median(baseline):.2f}x baseline)")

        port = free_port()
        data = Path(scratch, "data-latency")
        env = {**base_env, "CORRAL_DATA_DIR": str(data), "CORRAL_PORT": str(port)}
        process = subprocess.Popen([CORRAL, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            key = (data / "admin.key").read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
                timings: dict[str, list[float]] = {"/healthz": [], "/api/v1/whoami": []}
                for _ in range(REQUESTS):
                    for path, samples in timings.items():
                        started = time.perf_counter()
                        assert client.get(path).status_code == 200
                        samples.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(timeout=15)
        print(f"\nrequest latency on loopback, median of {REQUESTS} (one client, keep-alive, SQLite):")
        health, whoami = timings["/healthz"], timings["/api/v1/whoami"]
        print(f"  GET /healthz, no auth (baseline)           {median_ms(health)}")
        print(f"  GET /api/v1/whoami, key checked            {median_ms(whoami)}  "
              f"(+{(statistics.median(whoami) - statistics.median(health)) * 1000:.1f} ms for auth and lookup)")


if __name__ == "__main__":
    main()
