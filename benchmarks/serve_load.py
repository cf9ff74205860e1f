"""Load benchmark for `genlab serve`: a bounded number of concurrent clients on loopback, each sending
requests back to back for a bounded time, against the server with dynamic batching and without it
(--max-batch 1). Reports requests/s, p50/p99 latency and the server's resident memory before and
after the load, for image generation (DDPM, DDIM steps) and text generation (GPT).

    python benchmarks/serve_load.py [--clients 1,4,16] [--seconds 20] [--image-steps 20] [--tokens 32]

The server runs in its own process (`genlab serve --threads 1`), so the clients do not share its GIL;
on a 2-core machine they still share the CPU, as they would on a laptop (with 2 server threads the
clients oversubscribe the cores and every figure drops 2-3x: measured, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import markdown, timed_train

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(runs: list[Path], port: int, max_batch: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "genlab", "serve", *map(str, runs), "--port", str(port), "--threads", str(threads),
           "--max-batch", str(max_batch), "--max-wait-ms", "5", "--timeout", "600"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-2000:]}")


async def load(base: str, path: str, body: dict, clients: int, seconds: float) -> dict:
    """`clients` loops sending `body` back to back for `seconds`; every request's latency."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient):
        nonlocal errors
        k = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = await http.post(path, json={**body, "seed": 1000 * i + k})
            k += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"requests": len(latencies), "errors": errors, "req/s": len(latencies) / wall,
            "p50 ms": 1000 * q[49], "p99 ms": 1000 * q[98]}


def batch_rows(base: str) -> dict[str, float]:
    """Mean rows per forward batch by model, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    sums, counts = {}, {}
    for fam in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        if fam.name == "genlab_batch_rows":
            for s in fam.samples:
                if s.name.endswith("_sum"):
                    sums[s.labels["model"]] = s.value
                elif s.name.endswith("_count"):
                    counts[s.labels["model"]] = s.value
    return {m: sums[m] / counts[m] for m in sums if counts.get(m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=20.0, help="load time per (workload, clients, mode)")
    ap.add_argument("--image-steps", type=int, default=20, help="DDIM steps per image request")
    ap.add_argument("--tokens", type=int, default=32, help="max_new_tokens per text request")
    ap.add_argument("--threads", type=int, default=1,
                    help="the server's torch threads (1 on 2 cores: the clients need the other core)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="genlab-serve-bench-"))
    print("training the served runs (a few steps: throughput does not depend on the weights)...", flush=True)
    timed_train("ddpm", "digits", preset="tiny", steps=5, out=root / "ddpm", conditional=True)
    timed_train("gpt", "pycode", preset="small", steps=5, out=root / "gpt")
    workloads = {
        "image (ddpm tiny, n=1, %d DDIM steps)" % args.image_steps:
            ("/v1/models/ddpm/images", {"n": 1, "label": 3, "steps": args.image_steps}),
        "text (gpt small, %d tokens)" % args.tokens:
            ("/v1/models/gpt/text", {"prompt": "def ", "max_new_tokens": args.tokens, "temperature": 0.8,
                                     "stop": []}),
    }
    rows = []
    for mode, max_batch in (("batched", 64), ("unbatched", 1)):
        proc = start_server([root / "ddpm", root / "gpt"], args.port, max_batch, args.threads)
        base = f"http://127.0.0.1:{args.port}"
        try:
            rss0 = rss_mib(proc.pid)
            for name, (path, body) in workloads.items():
                for clients in map(int, args.clients.split(",")):
                    res = asyncio.run(load(base, path, body, clients, args.seconds))
                    rows.append({"workload": name, "mode": mode, "clients": clients, **res,
                                 "RSS MiB before": rss0, "RSS MiB after": rss_mib(proc.pid)})
                    print(markdown([rows[-1]]).splitlines()[-1], flush=True)
            print(f"{mode}: mean rows per forward batch {batch_rows(base)}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print()
    print(markdown(rows))
    for name in workloads:
        for clients in map(int, args.clients.split(",")):
            b = next(r for r in rows if r["workload"] == name and r["clients"] == clients and r["mode"] == "batched")
            u = next(r for r in rows if r["workload"] == name and r["clients"] == clients and r["mode"] == "unbatched")
            print(f"{name}, {clients} clients: batched/unbatched throughput = {b['req/s'] / u['req/s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
