"""A campaign's makespan with and without early stopping, at equal trial count: the same campaign
(t5-tiny-random, RTE and CB, N trials at concurrency C, each in its own temporary store) run with
`scheduler: none` and with `asha` (and `median` when asked), separate and fused (`fuse:`).

    .venv/bin/python benchmarks/campaign_makespan.py [--trials 12] [--concurrency 2] [--steps 16]
        [--schedulers none,asha] [--modes separate,fused]

t5-tiny-random answers every input alike, so a trial's score is its task's majority-class share:
Tune's grid runs the RTE trials first, and a stopping rule stops each CB trial at its first
evaluation while other trials are still pending — a campaign where stops certainly happen, and
the refill is what is measured. Before each mode's timed runs, an untimed run of its
`scheduler: none` campaign fills the JAX compilation cache (trials and step server share it), so no
timed run pays for compiling shapes another did not.

Per run (one line each): makespan (launch() to its return: model load, baselines, trials, report),
trial span (first trial's start to the last report), trial steps computed, trials stopped, the
refill gap (a stopped trial's last report to the next trial's start, over the stops made while
trials were pending: median and max), the slots' idle fraction over the trial span (1 - the trials'
start-to-last-report seconds / (C x span)) and, fused, the step server's idle fraction (1 - its
computing seconds / its first join to its last leave; step-servers.json). Last line: one JSON
object with every run's figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

TASKS = ("rte", "cb")


def campaign_values(name: str, storage: Path, jax_cache: Path, *, trials: int, concurrency: int, steps: int,
                    eval_every: int, scheduler: str, fused: bool) -> dict:
    """Every axis fixed; trials differ by task and seed (trials / 2 seeds per task)."""
    return {"name": name, "tasks": list(TASKS), "model": "t5-tiny-random", "dtype": "float32", "space": "table6",
            "fixed": {"learning_rate": 0.3, "parameter_scaling": False, "batch_size": 4, "steps": steps,
                      "warmup_steps": 0, "decay_factor": None, "prompt_length": 4, "init": "sampled_vocab"},
            "num_samples": 1, "seeds": max(trials // len(TASKS), 1),
            "scheduler": {"type": scheduler, "grace_period": 1, "reduction_factor": 2, "min_samples": 2},
            "resources": {"cpu": (os.cpu_count() or 1) / concurrency}, "max_concurrent_trials": concurrency,
            "eval_every": eval_every, "max_eval_examples": 8, "fuse": {"enabled": fused, "window_ms": 20},
            "storage_path": str(storage), "jax_cache_dir": str(jax_cache), "ensemble": {"select": "top"}}


def trial_records(folder: Path) -> list[dict]:
    """Each trial's task, start, last report and last step, from Tune's result.json files."""
    trials = []
    for path in folder.glob("*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if reports:
            trials.append({"task": reports[0]["config"]["task"], "started": reports[0]["started_at"],
                           "last": reports[-1]["reported_at"], "step": reports[-1]["step"]})
    return sorted(trials, key=lambda t: t["started"])


def figures(folder: Path, *, steps: int, concurrency: int) -> dict:
    trials = trial_records(folder)
    span_start, span_end = min(t["started"] for t in trials), max(t["last"] for t in trials)
    span = span_end - span_start
    gaps = []
    for trial in trials:
        if trial["step"] < steps:
            later = [t["started"] for t in trials if t["started"] > trial["last"]]
            if later:
                gaps.append(min(later) - trial["last"])
    busy = sum(t["last"] - t["started"] for t in trials)
    out = {"trials": len(trials), "trial_steps": sum(t["step"] for t in trials),
           "stopped": sum(t["step"] < steps for t in trials), "trial_span_s": round(span, 2),
           "refill_gap_median_s": round(statistics.median(gaps), 3) if gaps else None,
           "refill_gap_max_s": round(max(gaps), 3) if gaps else None,
           "slot_idle": round(1 - busy / (concurrency * span), 3)}
    servers = folder / "step-servers.json"
    if servers.exists():
        [record] = json.loads(servers.read_text())
        times = [when for when, _, _ in record["events"]]
        out |= {"server_idle": round(1 - record["busy_s"] / (max(times) - min(times)), 3),
                "server_calls": record["calls"]}
    return out


def run(root: Path, *, mode: str, scheduler: str, args, name: str | None = None) -> dict:
    from softprompt.search import launch as launching
    from softprompt.search.campaign import parse_campaign

    name = name or f"{mode}-{scheduler}"
    values = campaign_values(name, root / name, root / "jax_cache", trials=args.trials,
                             concurrency=args.concurrency, steps=args.steps, eval_every=args.eval_every,
                             scheduler=scheduler, fused=mode == "fused")
    started = time.perf_counter()
    result = launching.launch(parse_campaign(values))
    makespan = time.perf_counter() - started
    return {"mode": mode, "scheduler": scheduler, "makespan_s": round(makespan, 2)} | figures(
        result.experiment_dir, steps=args.steps, concurrency=args.concurrency)


def line(row: dict) -> str:
    gap = (f"refill gap median {row['refill_gap_median_s']:.2f} s (max {row['refill_gap_max_s']:.2f})"
           if row["refill_gap_median_s"] is not None else "no refill")
    server = f", server idle {row['server_idle']:.0%}" if "server_idle" in row else ""
    return (f"{row['mode']:8s} {row['scheduler']:6s} makespan {row['makespan_s']:7.1f} s  trial span "
            f"{row['trial_span_s']:6.1f} s  {row['trial_steps']} trial steps, {row['stopped']} stopped, {gap}, "
            f"slot idle {row['slot_idle']:.0%}{server}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--schedulers", default="none,asha")
    parser.add_argument("--modes", default="separate,fused")
    args = parser.parse_args()
    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    logging.getLogger("ray").setLevel(logging.ERROR)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="campaign-makespan-") as tmp:
        root = Path(tmp)
        for mode in args.modes.split(","):
            run(root, mode=mode, scheduler="none", args=args, name=f"warmup-{mode}")   # fills the JAX cache
            for scheduler in args.schedulers.split(","):
                rows.append(run(root, mode=mode, scheduler=scheduler, args=args))
                print("RESULT " + line(rows[-1]), flush=True)
    print()
    for row in rows:
        print(line(row))
    emit({"runs": rows, "trials": args.trials, "concurrency": args.concurrency, "steps": args.steps,
          "eval_every": args.eval_every, "load_avg_1min_before": round(load, 2),
          "load_avg_1min_after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()})


if __name__ == "__main__":
    main()
