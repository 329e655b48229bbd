"""`softprompt demo`: the whole service on one machine, end to end.

1. a search campaign of prompt-tuning trials on SST-2 (Ray Tune, ASHA), tracked in a local
   MLflow (SQLite file + artifact folder under the demo folder);
2. the top 3 prompts registered as a voted ensemble (`sst2-demo@production`), scored in the
   paper's Table 3 layout;
3. Ray Serve started with that ensemble; real validation sentences sent over HTTP;
4. a final summary — trials, Table 3, voted predictions with their votes, the PNGs, how to
   open the MLflow UI — and everything shut down.

`--quick` runs the same path on t5-tiny-random in a couple of minutes (a CI test does);
the default runs the real Gemma 3 270M, sized for ~20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.table import Table

ENSEMBLE_NAME = "sst2-demo"
SENTENCES_SENT = 6

# The campaigns, scaled to this machine (the paper: Table 6 with 10k-30k steps at batch 32-512).
QUICK = {"model": "t5-tiny-random", "num_samples": 3, "overrides": {"learning_rate": [0.3, 0.1],
         "steps": [24], "batch_size": [8], "prompt_length": [8]}, "eval_every": 12, "max_eval_examples": 32,
         "evaluation_examples": 64}
REAL = {"model": "gemma3-270m", "num_samples": 4, "overrides": {"learning_rate": {"loguniform": [0.1, 0.5]},
        "steps": [60], "batch_size": [8], "prompt_length": [20]}, "eval_every": 30, "max_eval_examples": 64,
        "evaluation_examples": 160}


class DemoResult(NamedTuple):
    folder: Path
    tracking_uri: str
    table3: dict
    predictions: list[dict]
    pictures: list[Path]


def demo_campaign(*, quick: bool, name: str, storage_path: Path):
    """The demo's campaign: SST-2, a few Table 6 trials (learning rate searched), ASHA."""
    from softprompt.search.campaign import parse_campaign

    size = QUICK if quick else REAL
    return parse_campaign({
        "name": name, "tasks": ["sst2"], "model": size["model"], "space": "table6",
        "overrides": size["overrides"],
        "fixed": {"init": "class_labels", "parameter_scaling": False, "warmup_steps": 0,
                  "decay_factor": None, "steps_per_decay": None},
        "num_samples": size["num_samples"], "search": {"type": "random", "seed": 0},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1}, "max_concurrent_trials": 2, "eval_every": size["eval_every"],
        "max_eval_examples": size["max_eval_examples"], "storage_path": str(storage_path),
    }, source="demo")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ask_server(port: int, records: list[dict]) -> dict:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"task": "sst2", "inputs": records},
                                  timeout=120)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _serve_and_ask(reference: str, tracking_uri: str, records: list[dict], *, jax_cache_dir: str) -> dict:
    """Starts Ray Serve with the ensemble, sends `records` over HTTP, shuts Serve down."""
    from ray import serve

    from softprompt.serve.app import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app([reference], tracking_uri=tracking_uri, jax_cache_dir=jax_cache_dir),
                  name="softprompt-demo", route_prefix="/")
        return _ask_server(port, records)
    finally:
        serve.shutdown()


def run_demo(*, quick: bool = False, storage_path: str | Path = "runs/demo", console: Console | None = None) -> DemoResult:
    """Runs the demo into `storage_path`/<campaign>; returns what the summary shows."""
    import ray

    from softprompt.core.tasks import get_task
    from softprompt.ensemble.build import build_ensemble
    from softprompt.ensemble.report import evaluate_and_log
    from softprompt.search.launch import launch
    from softprompt.search.report import trial_table
    from softprompt.store import Store

    console = console or Console()
    storage_path = Path(storage_path).resolve()
    name = f"demo-{'quick' if quick else 'sst2'}-{time.strftime('%Y%m%d-%H%M%S')}"
    size = QUICK if quick else REAL
    console.rule(f"[bold]1/4 search campaign {name}: {size['num_samples']} trials on SST-2 with {size['model']}")
    try:
        result = launch(demo_campaign(quick=quick, name=name, storage_path=storage_path))
        store = Store(result.tracking_uri)
        console.rule("[bold]2/4 ensemble: the top 3 prompts, majority vote")
        registered = build_ensemble(store, task="sst2", top=3, name=ENSEMBLE_NAME, experiments=[name], select="top")
        reference = f"{registered.name}/{registered.version}"
        table3 = evaluate_and_log(store, reference, max_examples=size["evaluation_examples"], console=console,
                                  picture_dir=result.experiment_dir)
        console.rule("[bold]3/4 serving: Ray Serve, one frozen model, the ensemble's prompts in one batched pass")
        task = get_task("sst2")
        records = [{"sentence": r["sentence"]} for r in list(task.source.records("validation"))[:SENTENCES_SENT]]
        answer = _serve_and_ask(reference, result.tracking_uri, records,
                                jax_cache_dir=str(storage_path / "jax_cache"))
    finally:
        ray.shutdown()
    pictures = sorted(result.experiment_dir.glob("*.png"))
    summary = DemoResult(result.experiment_dir, result.tracking_uri, table3.as_dict(),
                         [p | {"sentence": r["sentence"]} for p, r in zip(answer["predictions"], records)], pictures)
    console.rule("[bold]4/4 summary")
    _print_summary(console, result.rows, trial_table, summary)
    return summary


def _print_summary(console: Console, rows, trial_table, summary: DemoResult) -> None:
    console.print(trial_table(rows, title="trials (Ray Tune + ASHA)"))
    table3 = Table("prompt", summary.table3["metric"], title=f"Table 3 layout ({summary.table3['examples']} validation examples)")
    for number, member in enumerate(summary.table3["members"]):
        table3.add_row(f"member {number} ({member['run_id'][:8]})", f"{member[summary.table3['metric']]:.2f}")
    for key in ("average", "best", "ensemble"):
        table3.add_row(key, f"{summary.table3[key]:.2f}", style="bold" if key == "ensemble" else None)
    console.print(table3)
    voted = Table("sentence", "voted", "votes", "members", title="voted predictions over HTTP (POST /v1/predict)")
    for prediction in summary.predictions:
        voted.add_row(prediction["sentence"][:70], prediction["label"], json.dumps(prediction["votes"]),
                      ", ".join(prediction["members"]))
    console.print(voted)
    for picture in summary.pictures:
        console.print(f"picture: {picture}")
    store = summary.tracking_uri
    console.print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {store} --port 5000  (then open http://127.0.0.1:5000)")
    console.print("everything is shut down: Ray, Serve and the trials have stopped.")


def summary_json(summary: DemoResult) -> dict[str, Any]:
    return {"folder": str(summary.folder), "tracking_uri": summary.tracking_uri, "table3": summary.table3,
            "predictions": summary.predictions, "pictures": [str(p) for p in summary.pictures]}

