"""Load benchmark of the serving layer (not CI): gemma3-270m, a 5-prompt SST-2 ensemble.

Measured in ONE run, over HTTP on 127.0.0.1, at 1, 8 and 32 concurrent clients (each client
sends one single-input request at a time, closed loop):

- served: the real application (`softprompt.serve.app.build_app`), requests batched with
  `@serve.batch`, each input replicated across the 5 prompts inside one batched pass;
- naive:  a second Ray Serve deployment in the same Serve instance (`NaiveServer`, route
  `/naive`) with the same admission code and the same API, which answers each request by one
  single-prompt forward per member (5 passes of 1 row), requests handled concurrently in
  threads as a plain per-request handler would;
- ceiling: the frozen model's own batched forward throughput, in-process, in rows per second
  (`classify_scores` over the same inputs and prompts at the best pass size of a sweep), divided
  by 5 (rows per prediction).

The CPU is shared with other work, whose load changes from minute to minute, so each level runs
its rounds interleaved — ceiling probe, served round, naive round, ceiling probe, ... — and
`efficiency_at_32` divides the served throughput by the mean of the probes taken around it;
`efficiency_at_32_vs_best_ceiling` divides by the best probe of the whole run (the quietest moment).

The prompts are untrained (`SoftPrompt.init(..., init="sampled_vocab", seed=s)`): throughput does
not depend on what they learned. Inputs: SST-2 validation sentences of 17-32 tokens (one length
bucket, so served, naive and ceiling run the same shapes).

    .venv/bin/python benchmarks/serve_load.py                # ~8 minutes on 2 CPU cores
    .venv/bin/python benchmarks/serve_load.py --rounds 1 --clients 1,8

(No `from __future__ import annotations`: FastAPI must see the route annotations as types.)

The last stdout line is one JSON object: per client count the served and naive throughputs
(predictions/s), latencies (p50/p99, seconds) and the adjacent ceiling; `efficiency_at_32`
(served / ceiling) and `ratio_at_32` (served / naive).
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the sample ensemble lives there

for _name, _value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                      "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}.items():
    os.environ.setdefault(_name, _value)   # before Ray and JAX are imported (hence the late imports)

import httpx
import numpy as np
from fastapi import FastAPI
from ray import serve

from softprompt.core.batching import encode_pair
from softprompt.core.inference import Query, classify_scores
from softprompt.core.models import load_model
from softprompt.core.tasks import get_task
from softprompt.ensemble.voting import vote_classification
from softprompt.serve.admission import admit
from softprompt.serve import lifecycle
from softprompt.serve.app import ReplicaConfig, build_app
from softprompt.serve.config import ServeConfig
from softprompt.serve.schemas import EnsembleRef, Prediction, PredictRequest, PredictResponse
from softprompt.serve.state import load_state, resolve_all
from softprompt.store import Store
from sample_ensembles import register_sample_ensemble

MEMBERS = 5
naive_api = FastAPI(title="naive baseline")


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(naive_api)
class NaiveServer:
    """The baseline: the same model, ensemble and API, but one 1-row forward per member per input."""

    def __init__(self, config: ReplicaConfig):
        store = Store(config.tracking_uri)
        registered = resolve_all(store, config.ensembles)
        self.model = load_model(registered[0].manifest.model)
        self.state = load_state(store, self.model, config.ensembles, registered)
        self.max_inputs = config.settings.max_inputs

    def _votes(self, served, encoded):
        votes = []
        for pair in encoded:
            scores = [classify_scores(self.model, self.state.table, [Query(pair.input_ids, served.first_prompt + n)],
                                      [[list(t) for t in served.make_input([]).targets]], max_rows=1)[0]
                      for n in range(served.members)]                   # N separate passes of 1 row
            votes.append(vote_classification(np.stack(scores), served.task.label_words))
        return votes

    @naive_api.post("/v1/predict", response_model=PredictResponse)
    async def predict(self, request: PredictRequest) -> PredictResponse:
        admitted = admit(self.state, self.model, request, max_inputs=self.max_inputs)
        served = admitted.ensemble
        votes = await asyncio.to_thread(self._votes, served, admitted.encoded)
        return PredictResponse(task=request.task, ensemble=EnsembleRef(name=served.name, version=served.version),
                               predictions=[Prediction(label=v.label, votes=v.votes, shares=v.shares, members=v.members,
                                                       truncated=p.truncated) for v, p in zip(votes, admitted.encoded)])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pick_sentences(model, count: int) -> list[str]:
    """SST-2 validation sentences whose input is 17-32 tokens (one length bucket)."""
    spec = get_task("sst2")
    chosen = []
    for record in spec.source.records("validation"):
        ids = encode_pair(model, spec.input_text(record), "", max_input_tokens=spec.max_input_tokens,
                          max_target_tokens=spec.max_target_tokens).input_ids
        if 16 < len(ids) <= 32:
            chosen.append(record["sentence"])
        if len(chosen) == count:
            return chosen
    return chosen


class Ceiling:
    """The frozen model's batched forward in-process, on the benchmark's inputs x the 5 prompts:
    rows per second of `classify_scores` (one row per (input, prompt) on Gemma 3's single-token
    labels), `rows` rows per measurement."""

    def __init__(self, model, state, sentences: list[str], rows: int):
        served = state.ensembles[0]
        spec = served.task
        encoded = [encode_pair(model, spec.input_text({"sentence": s}), "", max_input_tokens=spec.max_input_tokens,
                               max_target_tokens=spec.max_target_tokens).input_ids for s in sentences]
        self.model, self.table = model, state.table
        self.queries = [Query(encoded[(i // MEMBERS) % len(encoded)], i % MEMBERS) for i in range(rows)]
        self.labels = [[list(t) for t in served.make_input([]).targets]] * rows
        self.best_size = rows

    def rate(self, size: int) -> float:
        started = time.perf_counter()
        classify_scores(self.model, self.table, self.queries, self.labels, max_rows=size)
        return len(self.queries) / (time.perf_counter() - started)

    def sweep(self, sizes: list[int]) -> dict[int, float]:
        """Rows/s at each pass size (compiled first); remembers the best size for `probe`."""
        results = {}
        for size in sizes:
            classify_scores(self.model, self.table, self.queries[:size], self.labels[:size], max_rows=size)
            results[size] = round(self.rate(size), 3)
            log(f"ceiling: {size} rows per pass -> {results[size]} rows/s")
        self.best_size = max(results, key=results.get)
        return results

    def probe(self) -> float:
        rate = self.rate(self.best_size)
        log(f"ceiling probe: {rate:.2f} rows/s")
        return rate


def drive(url: str, sentences: list[str], clients: int, requests: int) -> dict:
    """`clients` closed-loop clients, `requests` single-input requests each: wall time and latencies."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients)

    def client(number: int) -> tuple[float, float]:
        with httpx.Client(timeout=900) as http:
            start_gate.wait()
            began = time.perf_counter()
            for step in range(requests):
                body = {"task": "sst2", "inputs": [{"sentence": sentences[(number * requests + step) % len(sentences)]}]}
                sent = time.perf_counter()
                response = http.post(url, json=body)
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    if response.status_code != 200:
                        failures.append(response.text[:200])
            return began, time.perf_counter()

    with ThreadPoolExecutor(clients) as pool:
        spans = list(pool.map(client, range(clients)))
    if failures:
        log(f"{len(failures)} failed request(s) at {url}, e.g. {failures[0]}")
    return {"predictions": clients * requests, "failures": len(failures), "latencies": latencies,
            "seconds": max(end for _, end in spans) - min(begin for begin, _ in spans)}


def summarize(runs: list[dict]) -> dict:
    """Rounds of `drive` -> predictions/s over their total time, latency percentiles (s)."""
    latencies = [latency for run in runs for latency in run["latencies"]]
    predictions, seconds = sum(run["predictions"] for run in runs), sum(run["seconds"] for run in runs)
    return {"predictions": predictions, "failures": sum(run["failures"] for run in runs),
            "seconds": round(seconds, 2), "throughput": round(predictions / seconds, 3),
            "p50_s": round(float(np.percentile(latencies, 50)), 3), "p99_s": round(float(np.percentile(latencies, 99)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="Client counts, comma-separated.")
    parser.add_argument("--model", default="gemma3-270m", help="t5-tiny-random: a quick smoke run of the script.")
    parser.add_argument("--rounds", type=int, default=2, help="Measured rounds per level (one request per client each).")
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.1)
    parser.add_argument("--max-rows-per-pass", type=int, default=0,
                        help="Rows per forward chunk of the served app [default: the ceiling sweep's best size].")
    parser.add_argument("--ceiling-sizes", default="8,16,32,64", help="Pass sizes of the ceiling sweep.")
    parser.add_argument("--ceiling-rows", type=int, default=64, help="Rows per ceiling measurement.")
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--workdir", default=None, help="Where the MLflow store goes [default: a temp dir].")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="serve-load-"))

    import ray

    model = load_model(args.model)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    store = Store(uri, artifact_root=(workdir / "artifacts").as_uri())
    experiment_id = store.prepare_experiment("serve-load")
    registered = register_sample_ensemble(store, model, name="sst2-load", task="sst2", seeds=range(MEMBERS),
                                          length=args.prompt_length, init="sampled_vocab", experiment_id=experiment_id)
    references = [f"sst2-load/{registered.version}"]
    state = load_state(store, model, references, resolve_all(store, references))
    sentences = pick_sentences(model, 64)
    ceiling = Ceiling(model, state, sentences, rows=args.ceiling_rows)
    log(f"{len(sentences)} sentences; measuring the ceiling")
    sweep = ceiling.sweep([int(size) for size in args.ceiling_sizes.split(",")])

    max_rows = args.max_rows_per_pass or ceiling.best_size
    ray.init(include_dashboard=False, num_cpus=4, logging_level="error", log_to_driver=False)
    config = ServeConfig(port=args.port, app_name="served", max_batch_size=args.max_batch_size,
                         batch_wait_timeout_s=args.batch_wait_timeout_s, max_rows_per_pass=max_rows,
                         jax_cache_dir=None, follow_interval_s=0)
    served = lifecycle.start(build_app(references, tracking_uri=uri, config=config), config)
    serve.run(NaiveServer.bind(ReplicaConfig(tuple(references), tuple(references), uri, config.replace(token=None))),
              name="naive", route_prefix="/naive")
    urls = {"served": f"http://127.0.0.1:{args.port}/v1/predict", "naive": f"http://127.0.0.1:{args.port}/naive/v1/predict"}
    levels: dict[str, dict] = {}
    probes_all = list(sweep.values())
    try:
        drive(urls["naive"], sentences, 1, 1)                              # warm-up: its one shape
        for clients in client_counts:
            drive(urls["served"], sentences, clients, 1)                   # warm-up: this level's batch shapes
            rounds = {"served": [], "naive": []}
            probes = [ceiling.probe()]
            for _ in range(args.rounds):   # interleaved, so the shared CPU's load hits all three alike
                for kind in ("served", "naive"):
                    rounds[kind].append(drive(urls[kind], sentences, clients, 1))
                probes.append(ceiling.probe())
            probes_all += probes
            levels[str(clients)] = level = {kind: summarize(runs) for kind, runs in rounds.items()}
            level["ceiling_predictions_per_s"] = round(float(np.mean(probes)) / MEMBERS, 3)
            log(f"{clients} client(s): {level}")
    finally:
        lifecycle.stop(served, drain=False)
        ray.shutdown()
    best = max(probes_all) / MEMBERS
    summary = {"model": args.model, "members": MEMBERS, "prompt_length": args.prompt_length,
               "max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s,
               "max_rows_per_pass": max_rows, "ceiling_sweep_rows_per_s": sweep,
               "ceiling_best_predictions_per_s": round(best, 3), "levels": levels}
    top = str(max(client_counts))
    if top in levels:
        served = levels[top]["served"]["throughput"]
        summary[f"efficiency_at_{top}"] = round(served / levels[top]["ceiling_predictions_per_s"], 3)
        summary[f"efficiency_at_{top}_vs_best_ceiling"] = round(served / best, 3)
        summary[f"ratio_at_{top}"] = round(served / levels[top]["naive"]["throughput"], 3)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
