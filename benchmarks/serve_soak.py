"""Soak and crash benchmark of the serving layer (not CI): a 5-member SST-2 ensemble under steady
load for a long time, then one replica killed mid-load.

Phase 1, soak: `--clients` closed-loop clients (each sends one single-input request at a time)
for `--minutes`; per minute: requests, p50/p99 latency, statuses, and the replicas' resident
memory (RSS, sampled every few seconds). `rss_growth_after_warmup` compares the last minute's
RSS with that of the first minute after `--warmup-minutes` (compilation of each batch shape).

Phase 2, crash: the same load goes on while one model replica process is killed (SIGKILL); Serve
starts a replacement. Every answer is counted by status: a 500 is a failure, a 503 (no replica up,
or backpressure) is allowed; a connection error is counted as such. (The front deployment,
`serve/front.py`, retries a prediction whose replica died on another one.)

    .venv/bin/python benchmarks/serve_soak.py                         # gemma3-270m, 10 + 2 minutes
    .venv/bin/python benchmarks/serve_soak.py --model t5-tiny-random --minutes 1 --crash-seconds 30

The last stdout line is one JSON object: `minutes` (per minute figures), `rss_growth_after_warmup`,
`soak_failures` (anything but 200 during the soak), and `crash` (statuses while a replica died).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the sample ensemble lives there

for _name, _value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                      "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}.items():
    os.environ.setdefault(_name, _value)   # before Ray and JAX are imported

import httpx
import numpy as np
import psutil

MEMBERS = 5
SAMPLE_S = 5.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def replica_pids(app_name: str) -> list[int]:
    """The process ids of the application's live model replicas (Ray titles them
    `ray::ServeReplica:<app>:<deployment>`; the front's replicas are left out), among this
    process's descendants."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if f"ServeReplica:{app_name}:SoftPromptServer" in title:
            found.append(process.pid)
    return found


class Load:
    """`clients` closed-loop clients; every answer recorded as (time, seconds, status or error)."""

    def __init__(self, url: str, sentences: list[str], clients: int) -> None:
        self.url, self.sentences, self.clients = url, sentences, clients
        self.records: list[tuple[float, float, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def _client(self, number: int) -> None:
        with httpx.Client(timeout=120) as http:
            count = 0
            while not self.stop.is_set():
                sentence = self.sentences[(number + count) % len(self.sentences)]
                body = {"task": "sst2", "inputs": [{"sentence": sentence}]}
                started = time.monotonic()
                try:
                    status = str(http.post(self.url, json=body).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                self.records.append((started, time.monotonic() - started, status))
                count += 1

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)


def window(records, start: float, end: float) -> dict:
    """Requests answered in [start, end): count, statuses, p50/p99 latency of the 200s."""
    inside = [r for r in records if start <= r[0] + r[1] < end]
    ok = [seconds for _, seconds, status in inside if status == "200"]
    return {"requests": len(inside), "statuses": dict(Counter(status for _, _, status in inside)),
            "p50_s": round(float(np.percentile(ok, 50)), 4) if ok else None,
            "p99_s": round(float(np.percentile(ok, 99)), 4) if ok else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m", help="t5-tiny-random: a quick smoke run.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10.0, help="Soak duration.")
    parser.add_argument("--warmup-minutes", type=int, default=2,
                        help="Minutes left out of the RSS comparison (compilation of each batch shape).")
    parser.add_argument("--crash-seconds", type=float, default=120.0, help="Load after a replica is killed.")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--port", type=int, default=18310)
    parser.add_argument("--workdir", default=None, help="Where the MLflow store goes [default: a temp dir].")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="serve-soak-"))

    import ray

    from sample_ensembles import register_sample_ensemble
    from softprompt.core.models import load_model
    from softprompt.core.tasks import get_task
    from softprompt.serve import lifecycle
    from softprompt.serve.app import build_app
    from softprompt.serve.config import ServeConfig
    from softprompt.store import Store

    model = load_model(args.model)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    store = Store(uri, artifact_root=(workdir / "artifacts").as_uri())
    registered = register_sample_ensemble(store, model, name="sst2-soak", task="sst2", seeds=range(MEMBERS),
                                          length=args.prompt_length, init="sampled_vocab",
                                          experiment_id=store.prepare_experiment("serve-soak"))
    del model   # the replicas load their own
    sentences = [e.inputs for e in get_task("sst2").examples("validation", limit=64)]
    ray.init(include_dashboard=False, num_cpus=4, logging_level="error", log_to_driver=False)
    config = ServeConfig(port=args.port, replicas=args.replicas, replica_cpus=0, app_name="soak",
                         jax_cache_dir=None, follow_interval_s=0)
    server = lifecycle.start(build_app([f"sst2-soak/{registered.version}"], tracking_uri=uri, config=config), config)
    url = f"http://127.0.0.1:{args.port}/v1/predict"
    rss: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(SAMPLE_S):
            total = 0
            for pid in replica_pids("soak"):
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            rss.append((time.monotonic(), total))

    try:
        httpx.post(url, json={"task": "sst2", "inputs": [{"sentence": sentences[0]}]}, timeout=300)   # compiled
        threading.Thread(target=sample, daemon=True).start()
        load = Load(url, sentences, args.clients).start()
        began = time.monotonic()
        log(f"soak: {args.clients} clients for {args.minutes:g} min")
        time.sleep(args.minutes * 60)
        soaked = victim_at = time.monotonic()
        victim = replica_pids("soak")[0]
        log(f"crash: killing replica process {victim}")
        os.kill(victim, signal.SIGKILL)
        time.sleep(args.crash_seconds)
        load.end()
        ended = time.monotonic()
    finally:
        sampling.set()
        lifecycle.stop(server, drain=False)
        ray.shutdown()
    minutes = []
    count = max(1, int((soaked - began) // 60))
    for number in range(count):
        start, end = began + 60 * number, (began + 60 * (number + 1) if number + 1 < count else victim_at)
        figures = window(load.records, start, end)
        inside = [value for at, value in rss if start <= at < end]
        figures["replicas_rss_mb"] = round(max(inside) / 2**20, 1) if inside else None
        minutes.append({"minute": number + 1, **figures})
    settled = minutes[min(args.warmup_minutes, len(minutes) - 1):]
    first, last = settled[0]["replicas_rss_mb"], settled[-1]["replicas_rss_mb"]
    soak = window(load.records, began, victim_at)
    summary = {"model": args.model, "members": MEMBERS, "clients": args.clients, "replicas": args.replicas,
               "minutes": minutes,
               "rss_growth_after_warmup": round(last / first - 1, 4) if first and last and len(settled) > 1 else None,
               "soak_failures": soak["requests"] - soak["statuses"].get("200", 0),
               "crash": window(load.records, victim_at, ended + 180)}   # answered after the kill
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
