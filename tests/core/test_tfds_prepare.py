"""TFDS for real, offline: a task's shipped JSONL prepared as a TFDS dataset on this machine (no
download, no TensorFlow), then trained and evaluated from it through every place data is chosen
(`--data-source`, a task file's `data: {tfds: NAME}`, a campaign's `data_source`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from softprompt.core.tasks import TaskDataError, get_task
from softprompt.core.tasks.tfds_prepare import prepare_tfds, tfds_name
from softprompt.search.campaign import parse_campaign

pytest.importorskip("tensorflow_datasets")
BIN = Path(sys.executable).parent / "softprompt"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tfds")
    done = subprocess.run([str(BIN), "data", "prepare-tfds", "--task", "rte", "--out", str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["tfds_name"] == "softprompt_rte" and answer["use"].startswith("--data-source tfds:softprompt_rte")
    return folder


def test_the_prepared_dataset_holds_the_same_records_in_the_same_order(prepared):
    assert importlib_absent("tensorflow"), "the point: TFDS without TensorFlow"
    for split in ("train", "validation"):
        from_tfds = get_task("rte", source="tfds:softprompt_rte").examples(split, data_dir=prepared, training=False)
        from_jsonl = get_task("rte").examples(split, training=False)
        assert [(e.inputs, e.targets) for e in from_tfds] == [(e.inputs, e.targets) for e in from_jsonl]
        assert len(from_tfds) == {"train": 2490, "validation": 277}[split]


def test_train_and_evaluate_from_tfds_give_what_jsonl_gives(prepared, tmp_path):
    common = ["--task", "rte", "--max-examples", "16"]
    trained = subprocess.run([str(BIN), "train", "--task", "rte", "--model", "t5-tiny-random", "--steps", "2",
                              "--batch-size", "2", "--eval-every", "2", "--max-examples", "8",
                              "--data-source", "tfds:softprompt_rte", "--data-dir", str(prepared),
                              "--out", str(tmp_path / "prompt"), "--no-progress"],
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads(trained.stdout.splitlines()[-1])["steps"] == 2
    evaluations = [subprocess.Popen([str(BIN), "evaluate", "--prompt", str(tmp_path / "prompt"), *common, *source],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)   # side by side
                   for source in (["--data-source", "tfds:softprompt_rte", "--data-dir", str(prepared)], [])]
    scores = []
    for process in evaluations:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        scores.append(json.loads(out.splitlines()[-1]))
    assert scores[0] == scores[1]


def test_a_task_file_and_a_campaign_read_from_tfds(prepared, tmp_path):
    task_file = tmp_path / "rte-tfds.yaml"
    task_file.write_text(yaml.safe_dump({
        "name": "rte-tfds", "data": {"tfds": "softprompt_rte"},
        "input_template": "{premise}\nQuestion: {hypothesis}? Yes or No?\nAnswer:",
        "label_field": "label", "label_words": ["Yes", "No"]}))
    examples = get_task(task_file).examples("validation", data_dir=prepared)
    assert len(examples) == 277 and examples[0].targets in ("Yes", "No")
    campaign = parse_campaign({"name": "c", "tasks": ["rte"], "data_source": "tfds:softprompt_rte",
                               "data_dir": str(prepared)}, source="test")
    assert campaign.constants()["data_source"] == "tfds:softprompt_rte"


def test_bad_sources_and_unpreparable_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match="data source must be"):
        get_task("rte", source="csv")
    task_file = tmp_path / "nested.yaml"
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "a", "label": 0, "meta": {"x": 1}}) + "\n")
    task_file.write_text(yaml.safe_dump({"name": "nested", "data": {"train": "train.jsonl"},
                                         "input_template": "{text}", "label_field": "label",
                                         "label_words": ["no", "yes"]}))
    with pytest.raises(TaskDataError, match="field 'meta'"):
        prepare_tfds(task_file, out_dir=tmp_path / "out", splits=("train",))
    assert tfds_name("rte-qa") == "softprompt_rte_qa"


def importlib_absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
