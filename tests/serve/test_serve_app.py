"""The HTTP API on a real Ray Serve instance (`shared_serve`) with t5-tiny-random ensembles:
the conftest's SAMPLE_ENSEMBLES (sst2, rte, free-text squad, and a second sst2 ensemble that
the reload test moves to a new version) — all in ONE replica."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import httpx
import pytest

from softprompt.core.evaluation import encode_inputs
from softprompt.core.tasks import Example, get_task
from softprompt.ensemble.evaluate import evaluate_ensembles
from softprompt.ensemble.loaded import input_factory, load_ensemble
from softprompt.ensemble.predict import vote_inputs
from softprompt.ensemble.scores import MemberScores

from sample_ensembles import register_sample_ensemble

MAX_INPUTS = 8
SQUAD_RECORDS = [{"question": "Who went home?", "context": "Bob went home after the game."},
                 {"question": "What colour is the sky?", "context": "The sky is blue on clear days."},
                 {"question": "Where is Paris?", "context": "Paris is the capital of France."}]


class Server(NamedTuple):
    url: str
    versions: dict[str, str]   # ensemble name -> version loaded at start
    metrics_url: str           # Ray's Prometheus endpoint


def _records(task: str, count: int) -> list[dict]:
    spec = get_task(task)
    return [{name: record[name] for name in spec.fields} for record in spec.source.records("validation")][:count]


@pytest.fixture(scope="module")
def server(store, ensembles, shared_serve, server_config, token):
    from softprompt.serve.app import build_app
    from softprompt.serve.lifecycle import serving

    # 8 rows per pass: few compiled shapes, so the suite stays fast on 2 cores
    config = server_config(app_name="softprompt-test", max_inputs=MAX_INPUTS, max_batch_size=16,
                           batch_wait_timeout_s=0.02, token=token, max_rows_per_pass=8)
    app = build_app([f"{name}@production" for name in ensembles], tracking_uri=store.uri, config=config)
    with serving(app, config, port=shared_serve.port, shared=True) as running:
        yield Server(running.url, dict(ensembles), shared_serve.metrics_url)


@pytest.fixture
def client(server, auth):
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as http:
        yield http


def _expected(store, model, name: str, version: str, task: str, records: list[dict]):
    """What the ensemble predicts in-process, alone in one pass."""
    spec = get_task(task)
    loaded = load_ensemble(store.handle, f"{name}/{version}", model)
    examples = [Example(spec.input_text(record), "", {}) for record in records]
    make = input_factory(model, loaded, task=spec)
    return vote_inputs(model, loaded.table, [make(ids) for ids in encode_inputs(model, spec, examples)])[0]


def test_answers_equal_the_ensemble_alone_in_mixed_batches(server, client, store, tiny_model):
    requests = {"sst2": _records("sst2", 12), "rte": _records("rte", 6), "squad": SQUAD_RECORDS}
    # requests of 1-3 inputs, tasks interleaved and sent concurrently, so batches mix them
    chunks = [(task, index, records[index: index + 3]) for task, records in requests.items()
              for index in range(0, len(records), 3)]
    random.Random(0).shuffle(chunks)

    def send(chunk):
        task, index, inputs = chunk
        response = client.post("/v1/predict", json={"task": task, "inputs": inputs})
        assert response.status_code == 200, response.text
        return task, index, response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, chunks))
    served: dict[str, list] = {task: [None] * len(records) for task, records in requests.items()}
    for task, index, body in answers:
        assert body["task"] == task
        for offset, prediction in enumerate(body["predictions"]):
            served[task][index + offset] = prediction
    names = {"sst2": "sst2-a", "rte": "rte-b", "squad": "squad-c"}
    for task, records in requests.items():
        expected = _expected(store, tiny_model, names[task], server.versions[names[task]], task, records)
        got = [(p["label"], p["votes"], p["members"], p["shares"]) for p in served[task]]
        assert got == [(v.label, v.votes, v.members, v.shares) for v in expected], task

    # ... and the voted accuracy is the one `ensemble evaluate` (Table 3) reports
    spec = get_task("sst2")
    examples = spec.examples("validation", limit=12)
    loaded = load_ensemble(store.handle, f"sst2-a/{server.versions['sst2-a']}", tiny_model)
    scores = MemberScores.compute(tiny_model, spec, [p.embeddings for p in loaded.prompts], examples, metric="accuracy")
    table3 = evaluate_ensembles(scores, run_ids=[m.run_id for m in loaded.manifest.members],
                                ensembles={"voted": list(loaded.manifest.weights)})
    assert spec.score(examples, [p["label"] for p in served["sst2"]])["accuracy"] == table3.ensemble


BAD_REQUESTS = [  # (body or raw bytes, status, text the answer must contain)
    ({"task": "cola", "inputs": [{"sentence": "x"}]}, 404, "no ensemble is loaded for task 'cola'"),
    ({"task": "cb", "inputs": [{"premise": "x", "hypothesis": "y"}]}, 404, "task 'cb'"),
    ({"task": "sst2", "inputs": [{"sentence": "x"}], "ensemble": "nope"}, 404, "no ensemble named 'nope'"),
    ({"task": "sst2", "inputs": [{"sentence": "x"}], "ensemble": "rte-b"}, 422, "serves task 'rte'"),
    ({"task": "sst2", "inputs": [{"sentence": "fine"}, {"text": "x"}]}, 422, "sentence"),
    ({"task": "rte", "inputs": [{"premise": "x", "hypothesis": 5}]}, 422, "hypothesis"),
    ({"task": "sst2", "inputs": []}, 422, "inputs"),
    ({"task": "sst2"}, 422, "inputs"),
    ({"task": "sst2", "inputs": ["just a string"]}, 422, "inputs"),
    ({"task": "sst2", "inputs": [{"sentence": "x"}] * (MAX_INPUTS + 1)}, 413, f"at most {MAX_INPUTS}"),
    (b'{"task": "sst2", "inputs": [', 422, "JSON"),
    (b"not json at all", 422, "JSON"),
]


def test_bad_requests_get_their_status_while_good_ones_succeed(client):
    def send(body):
        if isinstance(body, bytes):
            return client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        return client.post("/v1/predict", json=body)

    good = {"task": "sst2", "inputs": [{"sentence": "a gorgeous , witty film"}, {"sentence": "dull"}]}
    jobs = [(good, 200, "")] * 6 + BAD_REQUESTS + [(good, 200, "")] * 6
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda job: send(job[0]), jobs))
    for (body, status, text), response in zip(jobs, responses):
        assert response.status_code == status, (body, response.text)
        assert text in response.text, (body, response.text)
        if status == 200:
            assert len(response.json()["predictions"]) == 2
    missing = responses[6 + 4]                                      # BAD_REQUESTS[4]: no `sentence`
    assert missing.json()["detail"][0]["loc"] == ["body", "inputs", 1, "sentence"]
    assert client.get("/healthz").status_code == 200               # the replica is still up


def test_overlong_input_is_truncated_and_flagged(client):
    inputs = [{"sentence": "a truly wonderful film " * 200}, {"sentence": "short"}]
    response = client.post("/v1/predict", json={"task": "sst2", "inputs": inputs})
    assert response.status_code == 200, response.text
    assert [p["truncated"] for p in response.json()["predictions"]] == [True, False]


def test_reload_during_traffic_switches_version_without_failures(server, client, store, tiny_model):
    old = server.versions["sst2-live"]
    new = register_sample_ensemble(store.handle, tiny_model, name="sst2-live", task="sst2", seeds=(20, 21, 22),
                                   length=4, experiment_id=store.experiment_id).version
    seen: list[tuple[float, int, str | None]] = []   # (send time, status, version)
    stop = threading.Event()

    def traffic():
        body = {"task": "sst2", "ensemble": "sst2-live", "inputs": [{"sentence": "it 's a charming journey"}]}
        for _ in range(400):                          # bounded
            if stop.is_set():
                return
            sent = time.monotonic()
            response = client.post("/v1/predict", json=body)
            version = response.json()["ensemble"]["version"] if response.status_code == 200 else None
            seen.append((sent, response.status_code, version))

    thread = threading.Thread(target=traffic)
    thread.start()
    while len(seen) < 5 and thread.is_alive():
        time.sleep(0.05)
    reloaded = client.post("/v1/ensembles/sst2-live/reload")
    reloaded_at = time.monotonic()
    while sum(sent > reloaded_at for sent, _, _ in seen) < 5 and thread.is_alive():
        time.sleep(0.05)
    stop.set()
    thread.join(60)

    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() == {"name": "sst2-live", "reference": "sst2-live@production",
                               "previous_version": old, "version": new, "replicas": 1}
    assert all(status == 200 for _, status, _ in seen), seen
    versions = [version for _, _, version in seen]
    assert versions[0] == old and versions[-1] == new
    assert versions == sorted(versions, key=lambda v: v == new)           # never back to the old one
    assert all(version == new for sent, _, version in seen if sent > reloaded_at)
    listed = {e["name"]: e["version"] for e in client.get("/v1/ensembles").json()["ensembles"]}
    assert listed["sst2-live"] == new and listed["sst2-a"] == server.versions["sst2-a"]
    assert client.post("/v1/ensembles/nope/reload").status_code == 404


def test_500_requests_from_50_concurrent_clients(server, auth):
    sentences = ["a gorgeous film", "dull", "it 's a charming and often affecting journey . "]

    def client_session(number: int) -> list[int]:
        with httpx.Client(base_url=server.url, headers=auth, timeout=120) as http:
            statuses = []
            for step in range(10):
                body = {"task": "sst2", "inputs": [{"sentence": sentences[(number + step) % len(sentences)]}]}
                response = http.post("/v1/predict", json=body)
                statuses.append(response.status_code)
                assert response.status_code != 200 or len(response.json()["predictions"][0]["members"]) == 3
            return statuses

    with ThreadPoolExecutor(50) as pool:
        statuses = [status for session in pool.map(client_session, range(50)) for status in session]
    assert len(statuses) == 500 and set(statuses) == {200}


def test_ensembles_and_health(client, server, tiny_model):
    client.post("/v1/predict", json={"task": "rte", "inputs": [{"premise": "A cat sat.", "hypothesis": "A cat."}]})
    listing = client.get("/v1/ensembles").json()
    by_name = {e["name"]: e for e in listing["ensembles"]}
    assert list(by_name) == ["sst2-a", "rte-b", "squad-c", "sst2-live"]
    rte = by_name["rte-b"]
    assert rte["task"] == "rte" and rte["model_fingerprint"] == tiny_model.fingerprint
    assert rte["model"] == "t5-tiny-random" and rte["reference"] == "rte-b@production"
    assert len(rte["members"]) == 3 and rte["requests"] >= 1 and rte["predictions"] >= 1
    for entry in by_name.values():
        for rate in [entry["disagreement_rate"], entry["split_vote_rate"]] + [m["disagreement_rate"] for m in entry["members"]]:
            assert rate is None or 0.0 <= rate <= 1.0
    health = httpx.get(f"{server.url}/healthz")                    # no token needed
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {e["name"] for e in health.json()["ensembles"]} == set(by_name)
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"].keys() >= {"/v1/predict", "/v1/ensembles"}


def test_bearer_token_is_required(server):
    body = {"task": "sst2", "inputs": [{"sentence": "x"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        for method, path in (("POST", "/v1/predict"), ("GET", "/v1/ensembles"), ("POST", "/v1/ensembles/sst2-a/reload")):
            response = httpx.request(method, f"{server.url}{path}", json=body if path == "/v1/predict" else None,
                                     headers=headers, timeout=60)
            assert response.status_code == 401, (headers, path, response.text)
    assert response.headers["www-authenticate"] == "Bearer"


def test_metrics_reach_prometheus(server, client):
    client.post("/v1/predict", json={"task": "sst2", "inputs": [{"sentence": "fine"}]})
    wanted = ("ray_softprompt_requests", "ray_softprompt_predictions", "ray_softprompt_batch_inputs_bucket",
              "ray_softprompt_batch_rows_bucket", "ray_softprompt_request_latency_ms_bucket")
    deadline = time.monotonic() + 40                    # Ray exports every few seconds
    while time.monotonic() < deadline:
        text = httpx.get(server.metrics_url, timeout=10).text
        if all(name in text for name in wanted):
            break
        time.sleep(1)
    assert all(name in text for name in wanted), [name for name in wanted if name not in text]
    assert 'ensemble="sst2-a"' in text
