"""`softprompt serve`: voted soft-prompt ensembles over HTTP (Ray Serve), until Ctrl-C.

Every option that is a serving setting takes its default, help line and bounds from
`softprompt.serve.config.ServeConfig` (`_setting`); the command builds one ServeConfig from them.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, List, Optional

import typer

from softprompt.serve.config import TOKEN_ENV, ServeConfig, option_spec

from ._cli_common import open_store, print_json, store_option, user_errors


def _setting(name: str, *flags: str, **extra: Any) -> Any:
    """The typer option of ServeConfig setting `name` (its flag: --NAME, unless `flags` say)."""
    spec = option_spec(name)
    return typer.Option(spec.pop("default"), *flags, **spec, **extra)


def _stop_on_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM (installed before the ready line: a client may stop the
    server the moment it reads it)."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    return stop


def serve(
    ensemble: Optional[List[str]] = typer.Argument(
        None, metavar="ENSEMBLE", show_default=False,
        help="NAME, NAME@ALIAS or NAME:VERSION [default: every ensemble with a production alias]."),
    host: str = _setting("host"),
    port: int = _setting("port"),
    replicas: int = _setting("replicas"),
    store: Optional[str] = store_option(),
    token: Optional[str] = _setting("token", envvar=TOKEN_ENV),
    max_inputs: int = _setting("max_inputs"),
    max_batch_size: int = _setting("max_batch_size"),
    batch_wait_timeout_s: float = _setting("batch_wait_timeout_s"),
    max_rows_per_pass: int = _setting("max_rows_per_pass"),
    max_body_bytes: int = _setting("max_body_bytes"),
    max_queued_requests: int = _setting("max_queued_requests"),
    model: Optional[str] = _setting("model"),
    replica_cpus: float = _setting("replica_cpus"),
    devices: int = _setting("devices"),
    jax_cache_dir: str = _setting("jax_cache_dir"),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster [default: a local one]."),
    metrics_port: Optional[int] = typer.Option(None, help="Prometheus port of a local Ray."),
    grace_period: float = _setting("grace_period_s", "--grace-period"),
    follow_interval: float = _setting("follow_interval_s", "--follow-interval"),
) -> None:
    """Serve voted predictions over HTTP until Ctrl-C (or SIGTERM); prints one JSON line when ready."""
    from softprompt.search.ray_env import RAY_LOGS, apply_ray_env_defaults, quiet_serve_logger, ray_log_options
    from softprompt.ensemble.loaded import manifest_model
    from softprompt.serve.app import build_app
    from softprompt.serve.state import resolve_all

    apply_ray_env_defaults()
    with user_errors():
        config = ServeConfig(   # before anything is read: an empty token never means "no auth"
            host=host, port=port, replicas=replicas, token=token, max_inputs=max_inputs,
            max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
            max_rows_per_pass=max_rows_per_pass, max_body_bytes=max_body_bytes,
            max_queued_requests=max_queued_requests, model=model, replica_cpus=replica_cpus, devices=devices,
            jax_cache_dir=jax_cache_dir, grace_period_s=grace_period, follow_interval_s=follow_interval)
        store = open_store(store)
        uri = store.tracking_uri
        references = list(ensemble or store.ensembles_with_alias("production"))
        if not references:
            raise ValueError(f"no ensemble to serve: none registered with a 'production' alias in "
                             f"{store.display_uri} (name one: softprompt serve NAME@ALIAS)")
        registered = resolve_all(store, references)       # once, here: every replica loads these versions
        for version in registered:     # a damaged member is named here, not in a replica's log
            store.verified_members(version)
        served = manifest_model(registered[0].manifest, model)   # ... and a model folder not on this machine
        config = config.replace(model=served if model else None)
        app = build_app(references, versions=[r.reference for r in registered], tracking_uri=uri, config=config)

    import ray

    from softprompt.serve import lifecycle

    address = ray_address or os.environ.get("RAY_ADDRESS") or "local"   # "local": our own, never another's
    shared = address != "local"                                        # joining a cluster others may use
    metrics = {"_metrics_export_port": metrics_port} if metrics_port and not shared else {}
    ray.init(address=address, include_dashboard=False, **ray_log_options(), **metrics)
    try:
        try:
            # a start that fails leaves nothing running
            server = lifecycle.start(app, config, shared=shared, on_listening=quiet_serve_logger)
        except lifecycle.PortInUse as error:
            typer.echo(f"error: {error} (choose another with --port)", err=True)
            raise typer.Exit(code=2) from error
        except lifecycle.NotStarted as error:
            typer.echo(f"error: {error} (Ray's logs: {RAY_LOGS})", err=True)
            raise typer.Exit(code=1) from error
        try:
            lifecycle.wait_healthy(server)
            stop = _stop_on_signal()
            print_json({"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs", "replicas": replicas,
                        "ensembles": [{"name": r.name, "version": r.version, "task": r.manifest.task}
                                      for r in registered], "auth": bool(token)})
            while not stop.wait(0.5):
                pass
        except lifecycle.NotHealthy as error:
            lifecycle.stop(server, drain=False)
            typer.echo(f"error: {error} (Ray's logs: {RAY_LOGS})", err=True)
            raise typer.Exit(code=1) from error
        except BaseException:
            lifecycle.stop(server, drain=False)
            raise
        typer.echo(f"stopping: health answers 503; requests in flight get up to {grace_period:g} s", err=True)
        left = lifecycle.left_in_flight(lifecycle.stop(server))
        typer.echo(f"stopped: {left} request(s) answered 503 at the end of the grace period" if left
                   else "stopped: every request in flight finished", err=True)
    finally:
        ray.shutdown()
