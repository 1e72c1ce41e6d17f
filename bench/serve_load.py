"""Load test of `tuneforge serve` on loopback: N concurrent clients, a bounded number of requests, throughput
and p50/p95/p99 latency, with micro-batching off (max batch 1) and on.

    python bench/serve_load.py runs/<id>                                   # 16 clients, 400 requests each setting
    python bench/serve_load.py runs/<id>/export/onnx-int8 --clients 32 --requests 800
    python bench/serve_load.py runs/<id> --clients 4 --requests 20 --batch-sizes 1,4    # smoke test

For each max batch size the script starts its own server (`python -m tuneforge serve REF --host 127.0.0.1
--port 0 ...`), waits for /health, sends a few warm-up requests, then lets the clients (threads, one
keep-alive connection each, one input per request) send requests until `--requests` are done or
`--time-limit` seconds pass, and stops the server. Every address is 127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

TEXTS = [
    "I was charged twice for my subscription this month, please refund one of the payments.",
    "My parcel says delivered but there is nothing at my door.",
    "I can't log in to my account after resetting the password.",
    "The app crashes every time I open the settings page on my phone.",
    "Where is my order? It was supposed to arrive on Monday and the tracking has not changed since Friday.",
    "Please cancel my plan at the end of the billing period.",
    "The kettle stopped working after two days, can I get a replacement?",
    "How do I change the email address on my account?",
]
PROMPTS = ["The weather in the city today is", "Once upon a time", "The best way to learn is", "Tomorrow we will"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def start_server(ref: str, batch: int, wait_ms: float, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "tuneforge", "serve", ref, "--host", "127.0.0.1", "--port", "0",
           "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms), "--log-level", "warning", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNEFORGE_API_KEY": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    if " on http://127.0.0.1:" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line.strip()} {proc.stdout.read()[-2000:]}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
    return proc, line.split(" on ")[1].split()[0]


def drive(url: str, route: str, body_of, clients: int, requests: int, time_limit: float) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + time_limit

    def client(worker: int) -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if issued[0] >= requests or time.monotonic() > stop_at:
                        return
                    n = issued[0]
                    issued[0] += 1
                start = time.perf_counter()
                r = http.post(f"{url}{route}", json=body_of(n))
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if r.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    if not latencies:
        raise SystemExit(f"no request succeeded ({errors[0]} errors)")
    return {"requests": len(latencies), "errors": errors[0], "seconds": wall, "rps": len(latencies) / wall,
            "p50": statistics.median(latencies), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="run folder or export folder to serve")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=400, help="requests per setting (default 400)")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per setting at most (default 300)")
    parser.add_argument("--batch-sizes", default="1,16", help="server --max-batch-size values (default 1,16)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="server --max-wait-ms (default 5)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="for summarize/generate (default 16)")
    args = parser.parse_args()
    import httpx

    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        proc, url = start_server(args.ref, batch, args.max_wait_ms, [])
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not answer /health within 120 s")
                time.sleep(0.2)
            info = httpx.get(f"{url}/v1/model").json()
            route = info["route"]
            texts = PROMPTS if info["task"] == "causal_lm" else TEXTS
            extra = {} if info["task"] == "classification" else {"max_new_tokens": args.max_new_tokens}

            def body_of(n: int, texts=texts, extra=extra) -> dict:
                return {"inputs": texts[n % len(texts)], **extra}

            drive(url, route, body_of, min(4, args.clients), min(8, args.requests), 60)  # warm-up
            before = httpx.get(f"{url}/v1/stats").json()
            result = drive(url, route, body_of, args.clients, args.requests, args.time_limit)
            after = httpx.get(f"{url}/v1/stats").json()
            result["mean_batch"] = (after["inputs"] - before["inputs"]) / max(1, after["batches"] - before["batches"])
            rows.append((batch, result))
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"\n{args.ref}: {info['task']} ({info['format']}{', ' + info['quantize'] if info['quantize'] else ''}), "
          f"{args.clients} clients, one input per request, max wait {args.max_wait_ms:g} ms")
    print("| max batch | requests | errors | req/s | p50 ms | p95 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, r in rows:
        print(f"| {batch} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
              f"{r['p99']:.1f} | {r['mean_batch']:.2f} |")
    if len(rows) > 1 and rows[0][0] == 1:
        for batch, r in rows[1:]:
            print(f"micro-batching gain (max batch {batch} vs 1): {r['rps'] / rows[0][1]['rps']:.2f}x throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
