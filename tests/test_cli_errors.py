"""Every command, given a bad argument, a missing or damaged file, an unreadable store or a damaged
registry version: ONE line on stderr naming the problem, a non-zero exit, no traceback — and
`--debug` shows the traceback. In-process (typer's CliRunner), against real files and stores."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.store import Store

from sample_ensembles import register_sample_ensemble

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """Files and stores the table's commands point at: a damaged prompt folder, a bad campaign
    file, a file that is not a database, and a store whose ensemble has a member damaged after
    registration."""
    root = tmp_path_factory.mktemp("cli-errors")
    damaged_prompt = root / "damaged-prompt"
    damaged_prompt.mkdir()
    (damaged_prompt / "prompt.json").write_text("{not json")
    (root / "bad.yaml").write_text("name: [unclosed\n")
    (root / "no-task.yaml").write_text("name: c\ntasks: [no-such-task]\n")
    (root / "not-a-db").mkdir()
    (root / "not-a-db" / "mlflow.db").write_text("not a database")
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    store = Store(uri, artifact_root=(root / "store" / "artifacts").as_uri())
    damaged = register_sample_ensemble(store, tiny_model, name="damaged", task="sst2", seeds=(0, 1),
                                       experiment_id=store.prepare_experiment("cli-errors"))
    tensor = Path(damaged.source.removeprefix("file://")) / "data/ensemble/members/1/prompt.safetensors"
    tensor.write_bytes(tensor.read_bytes()[:-8] + b"\0" * 8)
    return {"root": root, "uri": uri, "damaged": damaged}


def _cases(world) -> list[tuple[str, list[str], str]]:
    root, uri = world["root"], world["uri"]
    missing = str(root / "missing")
    unreachable = f"postgresql+psycopg://u:hidden-pw@127.0.0.1:{_closed_port()}/db"
    version = world["damaged"].version
    return [
        ("unknown task", ["train", "--task", "no-such-task", "--out", str(root / "out")], "no-such-task"),
        ("missing prompt", ["evaluate", "--task", "sst2", "--prompt", missing], "missing"),
        ("damaged prompt", ["explain", "--prompt", str(root / "damaged-prompt")], "damaged-prompt"),
        ("missing model", ["model", "info", "--model", missing], "missing"),
        ("unknown tfds task", ["data", "prepare-tfds", "--task", "no-such-task", "--out", missing], "no-such-task"),
        ("bad YAML", ["search", "launch", str(root / "bad.yaml")], "bad.yaml"),
        ("bad campaign", ["search", "launch", str(root / "no-task.yaml")], "no-such-task"),
        ("no campaign", ["search", "status", "nope", "--store", str(root)], "no campaign"),
        ("no campaign to resume", ["search", "resume", "nope", "--store", str(root)], "no campaign"),
        ("unknown ensemble", ["ensemble", "evaluate", "missing@production", "--store", uri], "missing"),
        ("malformed reference", ["ensemble", "evaluate", "a b@", "--store", uri], "malformed"),
        ("not a database", ["ensemble", "evaluate", "x", "--store",
                            f"sqlite:///{root / 'not-a-db' / 'mlflow.db'}"], "not a database"),
        ("unreachable store", ["ensemble", "build", "--task", "rte", "--store", unreachable],
         "cannot reach the tracking store"),
        ("damaged registry version", ["serve", "damaged@production", "--store", uri],
         f"ensemble 'damaged' version {version} member 1"),
    ]


def _one_line_error(result, fragment: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    return lines[0]


def test_every_command_names_the_problem_in_one_line(world, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SOFTPROMPT_STORE_RETRY_S", "0")
    for label, command, fragment in _cases(world):
        line = _one_line_error(runner.invoke(app, command), fragment)
        assert "hidden-pw" not in line, label


def test_a_damaged_member_is_named_by_file_before_serve_starts_ray(world, monkeypatch):
    import ray

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["serve", "damaged@production", "--store", world["uri"]])
    line = _one_line_error(result, "member 1 (run ")
    assert "data/ensemble/members/1/prompt.safetensors" in line and "sha256 differs" in line
    assert not ray.is_initialized()


@pytest.mark.parametrize("name", ["../../x", "a/b", "a:b", "a@b", "", "x" * 101])
def test_an_invalid_ensemble_name_is_refused_before_anything_is_written(tmp_path, monkeypatch, name):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = runner.invoke(app, ["ensemble", "build", "--task", "rte", "--name", name, "--store", uri])
    _one_line_error(result, "invalid ensemble name")
    assert not (tmp_path / "store").exists()


def test_debug_shows_the_traceback(world, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_DEBUG", "")      # --debug sets it (for child processes): restored after
    result = runner.invoke(app, ["--debug", "explain", "--prompt", str(world["root"] / "damaged-prompt")])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)   # raised, not turned into a line


def test_an_unexpected_error_is_one_line_with_exit_1():
    from softprompt._cli_common import OneLineErrors

    broken = typer.Typer(cls=OneLineErrors)

    @broken.command()
    def crash() -> None:
        raise RuntimeError("a bug\nwith a second line")

    @broken.command()
    def other() -> None:
        pass

    result = runner.invoke(broken, ["crash"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == "error: RuntimeError: a bug (--debug shows the traceback)"
