"""The service loop's serving side on one real Ray Serve instance (t5-tiny-random ensembles):
the OpenAI-compatible API through the real `openai` client, `GET /metrics` parsed with
prometheus_client's own parser, and a server following an alias while a client keeps asking."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sample_ensembles import register_sample_ensemble

MAX_INPUTS = 8
SERVED = ("sst2-a", "rte-b", "squad-c")
FOLLOWED = "sst2-follow"          # registered here; the follow test moves its alias


@pytest.fixture(scope="module")
def server(store, ensembles, shared_serve, server_config, token, tiny_model):
    from softprompt.serve.app import build_app
    from softprompt.serve.lifecycle import serving

    register_sample_ensemble(store.handle, tiny_model, name=FOLLOWED, task="sst2", seeds=(30, 31, 32), length=4,
                             experiment_id=store.experiment_id)
    config = server_config(app_name="softprompt-loop-test", max_inputs=MAX_INPUTS, max_batch_size=16,
                           batch_wait_timeout_s=0.02, token=token, max_rows_per_pass=8, follow_interval_s=1)
    app = build_app([f"{name}@production" for name in (*SERVED, FOLLOWED)], tracking_uri=store.uri, config=config)
    with serving(app, config, port=shared_serve.port, shared=True) as running:
        yield running.url


@pytest.fixture(scope="module")
def oai(server, token):
    with openai.OpenAI(base_url=f"{server}/v1", api_key=token, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def http(server, auth):
    with httpx.Client(base_url=server, headers=auth, timeout=120) as client:
        yield client


def test_openai_client_lists_models_and_gets_voted_labels(oai, http, ensembles):
    models = {model.id: model for model in oai.models.list().data}
    assert set(models) == {*SERVED, FOLLOWED}
    assert (models["rte-b"].object, models["rte-b"].task, models["rte-b"].members) == ("model", "rte", 3)
    assert models["sst2-a"].version == ensembles["sst2-a"]

    sentences = ["a gorgeous , witty film", "dull and tedious", "it 's a charming journey"]
    completion = oai.completions.create(model="sst2-a", prompt=sentences)
    predicted = http.post("/v1/predict", json={"task": "sst2", "inputs": [{"sentence": s} for s in sentences]}).json()
    assert [c.text for c in completion.choices] == [p["label"] for p in predicted["predictions"]]
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.system_fingerprint == f"sst2-a:{ensembles['sst2-a']}"
    details = completion.model_extra["softprompt"]
    for choice, mine, theirs in zip(completion.choices, details["predictions"], predicted["predictions"]):
        assert (mine["members"], mine["votes"]) == (theirs["members"], theirs["votes"])
        assert mine["vote_share"] == theirs["shares"][choice.text] and len(mine["members"]) == 3

    record = {"premise": "A cat sat on the mat.", "hypothesis": "A cat sat."}
    rte = oai.completions.create(model="rte-b", prompt=json.dumps(record))
    expected = http.post("/v1/predict", json={"task": "rte", "inputs": [record]}).json()["predictions"][0]["label"]
    assert [c.text for c in rte.choices] == [expected] and expected in ("entailment", "not_entailment")


def test_openai_errors_have_openai_shape_and_4xx(oai, server, token):
    with pytest.raises(openai.NotFoundError) as missing:
        oai.completions.create(model="nope", prompt="x")
    assert missing.value.body["code"] == "model_not_found" and "nope" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as plain:          # a two-field task needs a JSON object
        oai.completions.create(model="rte-b", prompt="just text")
    assert "premise" in plain.value.body["message"] and "JSON object" in plain.value.body["message"]
    with pytest.raises(openai.BadRequestError) as field:
        oai.completions.create(model="rte-b", prompt=json.dumps({"premise": "x"}))
    assert field.value.body["param"].startswith("prompt.0") and "hypothesis" in field.value.body["message"]
    with pytest.raises(openai.APIStatusError) as many:
        oai.completions.create(model="sst2-a", prompt=["x"] * (MAX_INPUTS + 1))
    assert many.value.status_code == 413
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    raw = httpx.post(f"{server}/v1/completions", json={"model": "sst2-a"}, timeout=60,
                     headers={"Authorization": f"Bearer {token}"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    assert raw.json()["error"]["param"] == "prompt"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels without `replica`) -> value, from a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "replica"))
            found[(sample.name, labels)] = sample.value
    return found


def test_metrics_carry_vote_figures_per_ensemble_version(oai, server, auth, ensembles):
    version = ensembles["rte-b"]
    before = _samples(httpx.get(f"{server}/metrics", headers=auth, timeout=60).text)
    prompts = [json.dumps({"premise": f"Sentence {i} is here.", "hypothesis": "A sentence."}) for i in range(5)]
    oai.completions.create(model="rte-b", prompt=prompts[:2])
    oai.completions.create(model="rte-b", prompt=prompts[2:])
    response = httpx.get(f"{server}/metrics", headers=auth, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)
    key = (("ensemble", "rte-b"), ("version", version))
    grew = lambda name, labels=key: after[(name, labels)] - before.get((name, labels), 0)  # noqa: E731
    assert grew("softprompt_requests_total", tuple(sorted(key + (("status", "200"),)))) == 2
    assert grew("softprompt_predictions_total") == 5
    assert grew("softprompt_vote_share_count") == 5 and grew("softprompt_request_duration_seconds_count") == 2
    assert 0.5 * 5 <= grew("softprompt_vote_share_sum") <= 5      # a majority of 3 has at least 2/3 of the vote
    members = sorted((dict(labels)["member"], dict(labels)["run_id"], value) for (name, labels), value in after.items()
                     if name == "softprompt_member_agreement_ratio" and dict(labels)["ensemble"] == "rte-b")
    assert [m for m, _, _ in members] == ["0", "1", "2"] and all(0 <= ratio <= 1 for _, _, ratio in members)
    agreements = sum(value for (name, labels), value in after.items()
                     if name == "softprompt_member_agreements_total" and dict(labels)["ensemble"] == "rte-b")
    predictions = after[("softprompt_predictions_total", key)]
    assert agreements + after[("softprompt_member_disagreements_total", key)] == 3 * predictions
    assert httpx.get(f"{server}/metrics", timeout=60).status_code == 401          # the token guards it too


def test_server_follows_the_alias_without_failed_requests(oai, store, tiny_model):
    old = {m.id: m.version for m in oai.models.list().data}[FOLLOWED]
    seen: list[tuple[float, str | None]] = []      # (send time, version that answered; None: failed)
    stop = threading.Event()

    def traffic():
        for _ in range(1000):                       # bounded
            if stop.is_set():
                return
            sent = time.monotonic()
            try:
                answer = oai.completions.create(model=FOLLOWED, prompt="it 's a charming journey")
                seen.append((sent, answer.system_fingerprint.split(":")[1]))
            except openai.APIError:
                seen.append((sent, None))

    thread = threading.Thread(target=traffic)
    thread.start()
    while len(seen) < 3 and thread.is_alive():
        time.sleep(0.05)
    new = register_sample_ensemble(store.handle, tiny_model, name=FOLLOWED, task="sst2", seeds=(40, 41, 42),
                                   length=4, experiment_id=store.experiment_id).version
    moved_at = time.monotonic()
    while not any(version == new for _, version in seen) and time.monotonic() - moved_at < 30 and thread.is_alive():
        time.sleep(0.1)
    switched = time.monotonic() - moved_at
    time.sleep(0.5)
    stop.set()
    thread.join(60)
    versions = [version for _, version in seen]
    assert None not in versions, "a request failed during the swap"
    assert versions[0] == old and versions[-1] == new, versions
    assert versions == sorted(versions, key=lambda v: v == new)       # never back to the old version
    assert switched < 30
    assert {m.id: m.version for m in oai.models.list().data}[FOLLOWED] == new
