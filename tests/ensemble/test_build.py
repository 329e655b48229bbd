"""Ensembles built from a real (tiny) campaign that held out a selection split: greedy (the
default) and top-N, registered as MLflow models, evaluated in the Table 3 layout, and refused
when a member's artifact or model does not match or the report split is the selection split.

The campaign's model is a tiny random Llama given as a Hugging Face folder (`decoder_folder`): the
loop from a campaign file's `model: <folder>` to a registered ensemble runs on the shared decoder."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.core.evaluation import encode_inputs
from softprompt.core.models import load_model
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import get_task
from softprompt.core.tasks.holdout import Holdout
from softprompt.ensemble.build import build_ensemble, learned_pool
from softprompt.ensemble.loaded import input_factory, load_ensemble
from softprompt.ensemble.predict import vote_inputs
from softprompt.ensemble.scores import MemberScores
from softprompt.ensemble.voting import combine
from softprompt.store import EnsembleError, Store

BIN = Path(sys.executable).parent / "softprompt"
HOLDOUT = Holdout(48, 7)
runner = CliRunner()


@pytest.fixture(scope="module")
def llama(decoder_folder):
    """The campaign's frozen model, loaded here as the trials loaded it."""
    return load_model(str(decoder_folder("llama")), dtype="float32")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, decoder_folder):
    """A 6-trial campaign on RTE launched through the CLI on the tiny Llama folder, holding out 48
    training records, with `ensemble: {top: 5}` (greedy selection on them)."""
    folder = tmp_path_factory.mktemp("campaign")
    spec = {"name": "ens", "tasks": ["rte"], "model": str(decoder_folder("llama")), "dtype": "float32", "space": "table6",
            "fixed": {"learning_rate": 0.3, "parameter_scaling": False, "batch_size": 4, "steps": 6,
                      "warmup_steps": 0, "decay_factor": None, "prompt_length": 4, "init": "sampled_vocab",
                      "selection_examples": HOLDOUT.size, "selection_seed": HOLDOUT.seed},
            "num_samples": 1, "seeds": 6, "scheduler": "none", "resources": {"cpu": 1},
            "max_concurrent_trials": 2, "eval_every": 3, "max_eval_examples": 8, "storage_path": str(folder),
            "ensemble": {"top": 5}}
    (folder / "ens.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([str(BIN), "search", "launch", str(folder / "ens.yaml")], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line for line in lines if line.startswith("{")] == lines[-1:], "ONE JSON line, the last"
    # without --verbose, Ray's own lines and the trial workers' output stay in Ray's log folder
    assert "pid=" not in done.stdout + done.stderr and "(raylet)" not in done.stderr
    # ... and progress is one short line per trial event, not Tune's wide table
    progress = [line for line in done.stderr.splitlines() if line.startswith("trial ")]
    assert "Trial status" not in done.stderr and "snapshotting" not in done.stderr   # nor Tune's advice
    assert [line for line in progress if re.fullmatch(r"trial 00005 .*seed=5 \| step 6/6 score [\d.]+ \(best [\d.]+\)",
                                                      line)]
    assert sum(line.endswith("| finished") for line in progress) == 6 and max(map(len, progress)) <= 80
    return Store(f"sqlite:///{folder / 'mlflow.db'}"), json.loads(lines[-1])


def test_campaign_end_registers_a_greedy_ensemble(campaign):
    store, summary = campaign
    [built] = summary["ensembles"]
    assert built["name"] == "rte-ensemble" and summary["trials"] == 6
    model = store.client.get_registered_model("rte-ensemble")
    assert {k: str(v) for k, v in model.aliases.items()} == {"production": built["version"]}
    manifest = store.resolve_ensemble("rte-ensemble@production").manifest
    selection = manifest.selection
    assert selection["method"] == "greedy" and selection["split"] == "train"
    assert selection["holdout"] == {"size": 48, "seed": 7} and selection["examples"] == 48
    assert selection["score"] >= selection["best_member_score"]
    assert 1 <= sum(manifest.weights) <= 5 and len(selection["candidates"]) == 6
    assert manifest.target_format == "plain" and manifest.dtype == "float32"


def test_greedy_never_scores_below_its_best_member_on_its_selection_split(campaign, llama, tmp_path):
    """Recomputed independently: every candidate alone and the registered ensemble on the held-out records."""
    store, _ = campaign
    registered = store.resolve_ensemble("rte-ensemble@production")
    task = get_task("rte")
    examples = task.examples("train", holdout=HOLDOUT, held_out=True)
    candidates = registered.manifest.selection["candidates"]
    prompts = [SoftPrompt.load(store.fetch_prompt(c["artifact_uri"], tmp_path / c["run_id"]), model=llama).embeddings
               for c in candidates]
    scores = MemberScores.compute(llama, task, prompts, examples, metric="accuracy")
    accuracy = [task.score(examples, predicted)["accuracy"] for predicted in scores.answers()]
    chosen = np.array([next((m.multiplicity for m in registered.manifest.members if m.run_id == c["run_id"]), 0)
                       for c in candidates])
    ensemble = task.score(examples, scores.vote(chosen))["accuracy"]
    assert ensemble == pytest.approx(registered.manifest.selection["score"])
    assert ensemble >= max(accuracy) == pytest.approx(registered.manifest.selection["best_member_score"])
    assert [c["selection_score"] for c in candidates] == pytest.approx(accuracy)    # each one's own, recorded


def test_selection_and_evaluation_splits_are_disjoint(campaign):
    store, _ = campaign
    task = get_task("rte")
    held = {e.inputs for e in task.examples("train", holdout=HOLDOUT, held_out=True)}
    trained = {e.inputs for e in task.examples("train", holdout=HOLDOUT)}
    validation = {e.inputs for e in task.examples("validation")}
    assert len(held) == 48 and not held & trained and not held & validation
    refused = runner.invoke(app, ["ensemble", "evaluate", "rte-ensemble@production", "--split", "train",
                                  "--store", store.tracking_uri])
    assert refused.exit_code == 2 and "was selected on the 'train' split" in refused.output


def test_ensemble_evaluate_prints_table3_with_top_n_and_greedy_rows(campaign):
    store, _ = campaign
    result = runner.invoke(app, ["ensemble", "evaluate", "rte-ensemble@production", "--max-examples", "16",
                                 "--store", store.tracking_uri])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output.strip().splitlines()[-1])
    assert set(table["ensembles"]) == {"ensemble (greedy)", "ensemble (top-5)"}
    assert sum(table["weights"]["ensemble (top-5)"]) == 5
    greedy_members = [v["accuracy"] for v, w in zip(table["members"], table["weights"]["ensemble (greedy)"]) if w]
    assert table["best"] == max(greedy_members) and table["average"] == pytest.approx(np.mean(greedy_members))
    assert 0.0 <= table["disagreement"]["ensemble (top-5)"] <= 1.0
    assert "ensemble (greedy), disagreement" in result.output
    # the evaluated ensemble against the best prompt on the same 16 examples: their accuracies differ by
    # exactly the examples one of them alone gets right
    paired = table["paired"]
    best = max(table["members"], key=lambda member: member["accuracy"])
    rival = paired["against"]["best tuned prompt"]
    assert paired["ensemble"] == "ensemble (greedy)" and rival["name"] == best["run_id"]
    assert table["ensemble"] - best["accuracy"] == pytest.approx(100 * (rival["ensemble_only"] - rival["rival_only"]) / 16)
    assert 0.0 < rival["p_value"] <= 1.0 and "against the best tuned prompt" in result.output
    assert "exact McNemar test p =" in result.output


def test_top_selection_too_few_runs_and_allow_fewer(campaign):
    store, _ = campaign
    top = build_ensemble(store, task="rte", top=3, experiments=["ens"], name="rte-top", select="top")
    metrics = [m.metric for m in top.manifest.members]
    assert metrics == sorted(metrics, reverse=True) and top.manifest.weights == (1, 1, 1)
    assert top.manifest.selection["method"] == "top"
    with pytest.raises(EnsembleError, match="only 6 eligible"):
        build_ensemble(store, task="rte", top=7, experiments=["ens"], select="top")
    smaller = build_ensemble(store, task="rte", top=7, experiments=["ens"], name="rte-small", allow_fewer=True,
                             select="top")
    assert len(smaller.manifest.members) == 6


def test_a_named_selection_split_and_soft_votes(campaign):
    store, _ = campaign
    built = build_ensemble(store, task="rte", top=3, experiments=["ens"], name="rte-soft", vote_rule="soft",
                           selection_split="validation", selection_limit=20)
    assert built.manifest.selection["split"] == "validation" and built.manifest.selection["holdout"] is None
    assert built.manifest.vote_rule == "soft"
    refused = runner.invoke(app, ["ensemble", "evaluate", "rte-soft@production", "--store", store.tracking_uri])
    assert refused.exit_code == 2 and "selected on the 'validation' split" in refused.output
    # a slice of validation selects; the report may read the validation records before it, not more
    tail = build_ensemble(store, task="rte", top=3, experiments=["ens"], name="rte-tail",
                          selection_split="validation[20:]", selection_limit=20)
    assert tail.manifest.selection["split"] == "validation[20:]" and tail.manifest.selection["examples"] == 20
    command = ["ensemble", "evaluate", "rte-tail@production", "--store", store.tracking_uri]
    refused = runner.invoke(app, command + ["--max-examples", "21"])
    assert refused.exit_code == 2 and "selected on the 'validation[20:]' split" in refused.output
    reported = runner.invoke(app, command + ["--max-examples", "20"])
    assert reported.exit_code == 0, reported.output


def test_a_changed_member_artifact_is_refused(campaign):
    store, _ = campaign
    registered = build_ensemble(store, task="rte", top=2, experiments=["ens"], name="rte-tampered", alias="prod",
                                select="top")
    member = registered.manifest.members[1]
    copy = Path(registered.source.removeprefix("file://")) / "data" / "ensemble" / "members" / "1" / "prompt.safetensors"
    copy.write_bytes(copy.read_bytes()[:-8] + b"\0" * 8)
    result = runner.invoke(app, ["ensemble", "evaluate", "rte-tampered@prod", "--store", store.tracking_uri])
    assert result.exit_code == 2 and "sha256 differs" in result.output and member.run_id in result.output


def test_prompts_trained_on_llama_are_refused_on_qwen3_in_one_line(campaign, decoder_folder):
    """The same d_model, so only the fingerprint tells the two tiny decoders apart."""
    store, _ = campaign
    qwen3 = str(decoder_folder("qwen3"))
    result = runner.invoke(app, ["ensemble", "evaluate", "rte-ensemble@production", "--model", qwen3,
                                 "--store", store.tracking_uri])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if "fingerprint" in line]
    assert "was built for model fingerprint" in line and str(decoder_folder("llama")) in line and qwen3 in line


def test_a_run_without_its_prompt_is_skipped_and_the_build_goes_on(campaign, llama, caplog):
    store, _ = campaign
    registered = build_ensemble(store, task="rte", top=6, experiments=["ens"], name="rte-all", select="top")
    first = registered.manifest.members[0]
    folder = Path(first.artifact_uri.removeprefix("file://"))
    hidden = folder.with_name("prompt-hidden")
    folder.rename(hidden)
    try:
        rebuilt = build_ensemble(store, task="rte", top=5, experiments=["ens"], name="rte-skip", select="top")
    finally:
        hidden.rename(folder)
    assert first.run_id not in {m.run_id for m in rebuilt.manifest.members} and len(rebuilt.manifest.members) == 5
    assert any(first.run_id in record.getMessage() for record in caplog.records)
    assert load_ensemble(store, "rte-skip@production", llama).members == 5



def test_the_learned_vote_refuses_prompts_without_signal_and_fits_prompts_with_it(campaign):
    """Asked for without greedy selection, the learned vote is refused in one line and nothing is
    registered. Scores without signal (every member indifferent between the labels) get no pool;
    scores that do carry signal (constructed: the gold label's margin plus noise) get a pool whose
    recorded score is its accuracy there."""
    store, _ = campaign
    built = runner.invoke(app, ["ensemble", "build", "--task", "rte", "--top", "3", "--experiment", "ens",
                                "--name", "rte-no-signal", "--vote", "learned", "--select", "top",
                                "--store", store.tracking_uri])
    assert built.exit_code == 2 and "use it with --select greedy" in built.output and "Traceback" not in built.output
    assert not store.client.search_registered_models("name = 'rte-no-signal'")
    with pytest.raises(EnsembleError, match="use it with --select greedy"):
        build_ensemble(store, task="rte", top=3, experiments=["ens"], select="top", vote_rule="learned")
    task = get_task("rte")
    examples = task.examples("train", holdout=HOLDOUT, held_out=True)
    with pytest.raises(EnsembleError, match="carry no signal"):
        learned_pool(MemberScores(task, examples, "accuracy", labels=np.zeros((2, len(examples), 2))))
    gold = np.array([task.label_words.index(e.targets) for e in examples])
    margins = np.where(gold == 1, 1.0, -1.0) + np.random.default_rng(0).normal(size=(2, len(gold)))
    scores = np.stack([np.zeros_like(margins), margins], axis=-1)                  # [2, B, 2]
    pool, score = learned_pool(MemberScores(task, examples, "accuracy", labels=scores))
    assert (pool.weights > 0).all()
    winners, _ = combine(scores, weights=pool.weights, rule="learned", bias=pool.bias)
    assert score == pytest.approx(100 * np.mean(winners == gold)) and score > 70


def test_a_learned_ensemble_serves_and_reports_its_pool(campaign, llama, tmp_path):
    """A learned ensemble (the greedy ensemble's members with a given pool): the serving path
    (replicate -> score -> vote) answers as the pool's formula, and Table 3 reports it first."""
    store, _ = campaign
    greedy = store.resolve_ensemble("rte-ensemble@production")
    members = greedy.manifest.members
    pool = {"weights": [1.0 + n for n in range(len(members))], "bias": [0.3, -0.1]}
    manifest = dataclasses.replace(greedy.manifest, name="rte-learned", vote_rule="learned", pool=pool)
    folders = [store.fetch_prompt(m.artifact_uri, tmp_path / m.run_id) for m in members]
    store.register_ensemble(manifest, folders, experiment_id=store.client.get_run(members[0].run_id).info.experiment_id)
    task = get_task("rte")
    examples = task.examples("validation", limit=12)
    encoded = encode_inputs(llama, task, examples)
    prompts = [SoftPrompt.load(folder, model=llama).embeddings for folder in folders]
    scores = MemberScores.compute(llama, task, prompts, examples, metric="accuracy").labels
    winners, shares = combine(scores, weights=pool["weights"], rule="learned", bias=pool["bias"])
    loaded = load_ensemble(store, "rte-learned@production", llama)
    make = input_factory(llama, loaded, task=task)
    votes, _ = vote_inputs(llama, loaded.table, [make(ids) for ids in encoded])
    assert [v.label for v in votes] == [task.label_words[c] for c in winners]
    np.testing.assert_allclose([list(v.shares.values()) for v in votes], shares, rtol=1e-6)
    reported = runner.invoke(app, ["ensemble", "evaluate", "rte-learned@production", "--max-examples", "16",
                                   "--store", store.tracking_uri])
    assert reported.exit_code == 0, reported.output
    table = json.loads(reported.output.strip().splitlines()[-1])
    assert list(table["ensembles"])[:2] == ["ensemble (greedy, learned)", "ensemble (greedy, majority)"]
    assert table["ensemble"] == table["ensembles"]["ensemble (greedy, learned)"]
    assert table["weights"]["ensemble (greedy, learned)"][:len(members)] == pool["weights"]


def test_build_and_campaign_end_with_a_guarded_promotion(campaign, tmp_path):
    """`ensemble build --promote-if-better`: an unset alias is taken; the same selection again is
    registered but refused (0 against 0 discordant examples), the alias stays; a campaign file's
    `ensemble: {promote_if_better: true}` ends the same way."""
    from softprompt.pipeline import build_campaign_ensembles
    from softprompt.search.campaign import load_campaign

    store, summary = campaign
    command = ["ensemble", "build", "--task", "rte", "--experiment", "ens", "--name", "rte-guarded", "--top", "3",
               "--promote-if-better", "--store", store.tracking_uri]
    taken = runner.invoke(app, command)
    assert taken.exit_code == 0, taken.output
    first = json.loads(taken.stdout.strip().splitlines()[-1])
    assert first["alias"] == "production" and first["promotion"]["promoted"] and first["promotion"]["incumbent"] is None
    refused = runner.invoke(app, command + ["--promote-max-p", "0.5"])
    assert refused.exit_code == 0, refused.output
    second = json.loads(refused.stdout.strip().splitlines()[-1])
    promotion = second["promotion"]
    assert second["alias"] is None and not promotion["promoted"] and promotion["incumbent"] == first["version"]
    assert (promotion["candidate_only"], promotion["incumbent_only"], promotion["p_value"]) == (0, 0, 1.0)
    assert promotion["examples"] == HOLDOUT.size and promotion["max_p"] == 0.5
    assert f"not promoted: version {second['version']}" in refused.stderr
    assert store.alias_version("rte-guarded", "production") == first["version"]
    assert store.resolve_ensemble(f"rte-guarded/{second['version']}").manifest.members   # registered all the same

    production = store.alias_version("rte-ensemble", "production")
    spec = {"name": "ens", "tasks": ["rte"], "model": store.resolve_ensemble("rte-ensemble@production").manifest.model,
            "dtype": "float32", "fixed": {"selection_examples": HOLDOUT.size},
            "ensemble": {"top": 5, "promote_if_better": True}}
    (tmp_path / "guarded.yaml").write_text(yaml.safe_dump(spec))
    [built] = build_campaign_ensembles(load_campaign(tmp_path / "guarded.yaml"), store.tracking_uri)
    assert built["promotion"]["incumbent"] == production and not built["promotion"]["promoted"]
    assert store.alias_version("rte-ensemble", "production") == production


class _Page(HTMLParser):
    """Tables (by id: rows of cell texts), section ids and curve polylines of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: list[str] = []
        self.curves: list[str] = []
        self._table = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "polyline":
            self.curves.append(attrs["data-trial"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None


def test_search_report_html_is_one_static_page(campaign, tmp_path):
    store, summary = campaign
    evaluated = runner.invoke(app, ["ensemble", "evaluate", "rte-ensemble@production", "--max-examples", "16",
                                    "--no-designed", "--store", store.tracking_uri])
    assert evaluated.exit_code == 0, evaluated.output
    out = tmp_path / "report" / "ens.html"
    done = runner.invoke(app, ["search", "report", "ens", "--html", str(out),
                               "--store", str(Path(summary["experiment_dir"]).parent)])
    assert done.exit_code == 0, done.output
    page = _Page()
    page.feed(out.read_text())
    assert page.sections == ["trials", "curves", "designed", "table3", "ensembles"]
    header, *trials = page.tables["trials"]
    assert header[:2] == ["trial", "state"] and len(trials) == 6 and "best score" in header
    assert sorted(page.curves) == sorted(row[0] for row in trials)            # one curve per trial
    table3 = [table for name, table in page.tables.items() if name.startswith("table3-")][-1]
    rows = {row[0]: row[1] for row in table3[1:]}
    assert {"average", "best prompt"} <= set(rows) and any(name.startswith("ensemble:") for name in rows)
    [built] = summary["ensembles"]
    members = page.tables["ensemble-0"][1:]
    assert [row[0] for row in members] == [m["run_id"] for m in built["members"]]
    assert "http" not in out.read_text().replace("http://www.w3.org/2000/svg", "")   # nothing fetched
    refused = runner.invoke(app, ["search", "report", "ens", "--store", str(tmp_path)])
    assert refused.exit_code == 2 and "--by AXIS" in refused.output
