"""One ServeConfig: `softprompt serve`'s options, the application's deployment options, the replicas'
settings, the builder's arguments and deploy.py's environment all come from it; bad values are one
line; `lifecycle.wait_healthy` ends with one clear error. No Ray is started here."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import typer.main

from softprompt.serve.config import ServeConfig, ServeConfigError, environment_variable

FLAGS = {"grace_period_s": "grace_period", "follow_interval_s": "follow_interval"}   # settings whose flag differs


def test_every_serve_option_that_is_a_setting_has_its_default_help_and_bounds():
    from softprompt.cli import app

    command = typer.main.get_command(app).commands["serve"]
    options = {param.name: param for param in command.params}
    settings = set(ServeConfig.model_fields) - {"app_name"}          # the one setting with no flag
    for name in settings:
        option, field = options[FLAGS.get(name, name)], ServeConfig.model_fields[name]
        assert option.default == field.default and option.help == field.description, name
    assert (options["port"].min, options["port"].max) == (1, 65535)
    assert options["max_inputs"].min == 1 and options["token"].envvar == environment_variable("token")


def test_bad_values_are_one_line_naming_the_setting():
    for bad, words in [({"token": "  "}, "token: the token is empty"), ({"max_inputs": 0}, "max_inputs: "),
                       ({"port": 70000}, "port: "), ({"max_input": 3}, "max_input: Extra inputs")]:
        with pytest.raises(ServeConfigError) as error:
            ServeConfig(**bad)
        assert str(error.value).startswith(words) and "\n" not in str(error.value)
    assert "s3cret" not in repr(ServeConfig(token="s3cret"))


def test_the_environment_sets_any_setting_and_the_token():
    config = ServeConfig.from_environment({"SOFTPROMPT_MAX_INPUTS": "8", "SOFTPROMPT_API_TOKEN": "t",
                                           "SOFTPROMPT_FOLLOW_INTERVAL_S": "0", "SOFTPROMPT_HOME": "/x"})
    assert (config.max_inputs, config.token_value, config.follow_interval_s) == (8, "t", 0)
    assert config.replace(max_inputs=9) == ServeConfig(max_inputs=9, token="t", follow_interval_s=0)
    with pytest.raises(ServeConfigError, match="token is empty"):
        ServeConfig.from_environment({"SOFTPROMPT_API_TOKEN": ""})


def test_the_deployment_and_its_replicas_take_the_config(tmp_path):
    from softprompt.ensemble.predict import DEFAULT_MAX_ROWS
    from softprompt.serve.app import AppArgs, app_builder, build_app
    from softprompt.serve.front import model_of
    from softprompt.serve.guard import GuardSettings, token_digest

    assert ServeConfig().max_rows_per_pass == DEFAULT_MAX_ROWS
    config = ServeConfig(replicas=3, replica_cpus=0.5, max_queued_requests=7, grace_period_s=4, token="t",
                         jax_cache_dir=str(tmp_path / "jax"), max_inputs=5, max_body_bytes=1000)
    app = build_app(["a/1"], versions=["a/1"], tracking_uri="http://127.0.0.1:5000", config=config)
    deployment = model_of(app)
    assert (deployment.num_replicas, deployment.max_queued_requests) == (3, 7)
    assert deployment.ray_actor_options == {"num_cpus": 0.5} and deployment._deployment_config.graceful_shutdown_timeout_s == 4
    replica = deployment.init_args[0]
    assert replica.settings.token is None and not hasattr(replica, "token_sha256")        # the model never sees it
    assert replica.settings.max_inputs == 5 and replica.settings.jax_cache_dir == str(tmp_path / "jax")
    front = app._bound_deployment                     # the HTTP ingress: light, no CPU, as many as the model
    assert (front.name, front.num_replicas, front.max_queued_requests) == ("Front", 3, 7)
    assert front.ray_actor_options == {"num_cpus": 0} and front._deployment_config.graceful_shutdown_timeout_s == 4
    assert front.max_ongoing_requests >= deployment.max_ongoing_requests + deployment.max_queued_requests
    assert front.init_args[1] == GuardSettings(token_digest("t"), 1000)                     # only the digest travels
    overridden = build_app(["a/1"], versions=["a/1"], tracking_uri="x", config=config, max_inputs=6)
    assert model_of(overridden).init_args[0].settings.max_inputs == 6
    on_gpus = model_of(build_app(["a/1"], versions=["a/1"], tracking_uri="x", config=config, devices=8))
    assert on_gpus.ray_actor_options == {"num_cpus": 0.5, "num_gpus": 8} and on_gpus.init_args[0].settings.devices == 8
    with pytest.raises(ServeConfigError, match="^devices: "):
        ServeConfig(devices=-1)
    with pytest.raises(ServeConfigError, match="max_imputs"):
        build_app(["a/1"], versions=["a/1"], tracking_uri="x", max_imputs=6)
    assert set(ServeConfig.model_fields) < set(AppArgs.model_fields)                       # every setting is an arg
    built = app_builder(AppArgs(ensembles="a@production, b/3", versions="a/7,b/3", tracking_uri="x", max_inputs=9))
    assert model_of(built).init_args[0].settings == ServeConfig(max_inputs=9).replace(
        token=None, jax_cache_dir=str(Path.cwd() / "runs" / "jax_cache"))


def test_wait_healthy_names_the_url_and_the_last_answer():
    from softprompt.serve.lifecycle import NotHealthy, wait_healthy

    class Draining(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Draining) as listener:
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{listener.server_address[1]}"
        with pytest.raises(NotHealthy, match=rf"{url}/healthz did not answer 200 within 0.5 s \(last: HTTP 503\)"):
            wait_healthy(url, timeout_s=0.5)
        listener.shutdown()


def test_docs_serving_lists_every_setting_with_its_default():
    table = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    for name, field in ServeConfig.model_fields.items():
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
        shown = {None: ("none", "the ensembles' own"), 30.0: ("30",), 10.0: ("10 (0: off)",)}.get(
            field.default, (str(field.default),))
        assert row.split("|")[3].strip() in shown, row
