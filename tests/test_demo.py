"""`softprompt demo --quick`: the whole path (search, ensemble, serve, summary) on t5-tiny-random."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from softprompt.demo import INITS

BIN = Path(sys.executable).parent / "softprompt"


def _ray_sessions() -> set[str]:
    return {path.name for path in Path("/tmp/ray").glob("session_2*")}


def _processes_of(sessions: set[str]) -> list[str]:
    """Command lines of live processes that belong to one of these Ray sessions."""
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if any(session in line for session in sessions)]


def test_quick_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path):
    before = _ray_sessions()
    env = os.environ | {"MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    done = subprocess.run([str(BIN), "demo", "--quick", "--store", str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    table3 = summary["table3"]
    # three tuned prompts (the greedy members and the rest of the top 3), the designed prompt, two ensembles
    assert len(table3["members"]) == 3 and table3["examples"] == 64
    assert sorted(member["init"] for member in table3["members"]) == sorted(INITS)   # one prompt per init
    assert list(table3["ensembles"]) == ["ensemble (greedy)", "ensemble (top-3)"]
    assert list(table3["baselines"]) == ["designed: review+labels 0-shot"]
    greedy = table3["weights"]["ensemble (greedy)"]
    assert 1 <= sum(greedy) <= 3 and table3["weights"]["ensemble (top-3)"] == [1, 1, 1]
    verdict = summary["verdict"]
    assert verdict["best tuned prompt"] == max(m["accuracy"] for m in table3["members"])
    assert verdict["ensemble"] == table3["ensembles"]["ensemble (greedy)"]
    assert verdict["best designed prompt"] == table3["baselines"]["designed: review+labels 0-shot"]
    against = table3["paired"]["against"]   # each verdict's gap, sentence by sentence, and whether it is noise
    assert set(against) == {"best tuned prompt", "best designed prompt"}
    assert against["best designed prompt"]["name"] == "designed: review+labels 0-shot"
    for rival, paired in against.items():
        assert verdict["ensemble"] - verdict[rival] == pytest.approx(
            100 * (paired["ensemble_only"] - paired["rival_only"]) / 64)
    assert len(summary["predictions"]) == 6
    for prediction in summary["predictions"]:
        assert prediction["label"] in ("negative", "positive")
        assert sum(prediction["votes"].values()) == sum(greedy)
        assert abs(sum(prediction["shares"].values()) - 1) < 1e-6
    names = {Path(p).name for p in summary["pictures"]}
    assert {"curves.png", "table3.png"} <= names and all(Path(p).stat().st_size > 0 for p in summary["pictures"])
    assert summary["tracking_uri"].startswith("sqlite:///" + str(tmp_path))
    assert set(summary["minutes"]) == {"search campaign", "ensemble and Table 3", "serving"}
    assert all(minutes > 0 for minutes in summary["minutes"].values())
    for heading in ("trials", "Table 3", "the voted ensemble", "exact McNemar test", "voted predictions", "MLflow UI",
                    "wall time"):
        assert heading in done.stdout
    started = _ray_sessions() - before
    assert started, "the demo started its own local Ray"
    assert _processes_of(started) == []  # ... and shut it down: no raylet, GCS or worker is left
