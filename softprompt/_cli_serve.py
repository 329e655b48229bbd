"""`softprompt serve`: voted soft-prompt ensembles over HTTP (Ray Serve), until Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from typing import List, Optional

import typer

from ._cli_common import open_store, print_json, store_option, user_errors

APP_NAME = "softprompt"


def _stop_on_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM (installed before the ready line: a client may stop the
    server the moment it reads it)."""
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    return stop


def _replica_failure(error: RuntimeError) -> str:
    """The exception a replica's constructor raised (the last line of the traceback Serve keeps in
    the deployment's status: `EnsembleError: ensemble 'x' was built for model ...`), else `error`."""
    from ray import serve as ray_serve

    try:
        deployments = ray_serve.status().applications[APP_NAME].deployments.values()
    except Exception:  # noqa: BLE001 - the status is a courtesy; Serve's own message still says what failed
        return str(error)
    causes = [lines[-1].strip() for d in deployments if (lines := [x for x in d.message.splitlines() if x.strip()])]
    return "; ".join(dict.fromkeys(causes)) or str(error)


def serve(
    ensemble: Optional[List[str]] = typer.Argument(
        None, metavar="ENSEMBLE", show_default=False,
        help="NAME, NAME@ALIAS or NAME:VERSION [default: every ensemble with a production alias]."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes it (use --token)."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    replicas: int = typer.Option(1, min=1, help="Replicas, each with one copy of the model."),
    store: Optional[str] = store_option(),
    token: Optional[str] = typer.Option(None, envvar="SOFTPROMPT_API_TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' on /v1/*."),
    max_inputs: int = typer.Option(64, min=1, help="Inputs per request (more: 413)."),
    max_batch_size: int = typer.Option(32, min=1, help="Inputs gathered into one pass."),
    batch_wait_timeout_s: float = typer.Option(0.05, min=0.0, help="How long a batch waits to fill."),
    max_rows_per_pass: int = typer.Option(32, min=1, help="Rows (inputs x members) per forward chunk."),
    max_body_bytes: int = typer.Option(1 << 20, min=1, help="Larger request bodies get 413."),
    max_queued_requests: int = typer.Option(512, min=1, help="Queued requests per replica (more: 503)."),
    model: Optional[str] = typer.Option(None, help="Frozen model [default: the ensembles' own]."),
    replica_cpus: float = typer.Option(1.0, min=0.0, help="Ray CPUs reserved per replica."),
    jax_cache_dir: str = typer.Option("runs/jax_cache", help="JAX compilation cache for replicas."),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster [default: a local one]."),
    metrics_port: Optional[int] = typer.Option(None, help="Prometheus port of a local Ray."),
    grace_period: float = typer.Option(30.0, min=0.0, help="On SIGTERM: seconds for requests in flight."),
    follow_interval: float = typer.Option(10.0, min=0.0, help="Poll each alias every S seconds; serve where it "
                                                              "moves (0: off)."),
) -> None:
    """Serve voted predictions over HTTP until Ctrl-C (or SIGTERM); prints one JSON line when ready."""
    from softprompt.search.ray_env import RAY_LOGS, apply_ray_env_defaults, quiet_serve_logger, ray_log_options
    from softprompt.ensemble.loaded import manifest_model
    from softprompt.serve.app import build_app
    from softprompt.serve.listen import PortInUse, start_http
    from softprompt.serve.state import resolve_all

    apply_ray_env_defaults()
    with user_errors():
        if token is not None and not token.strip():   # before anything is read: an empty token never means "no auth"
            raise ValueError("the token is empty: give a real token, or none to serve without authentication")
        store = open_store(store)
        uri = store.tracking_uri
        references = list(ensemble or store.ensembles_with_alias("production"))
        if not references:
            raise ValueError(f"no ensemble to serve: none registered with a 'production' alias in "
                             f"{store.display_uri} (name one: softprompt serve NAME@ALIAS)")
        registered = resolve_all(store, references)       # once, here: every replica loads these versions
        for version in registered:     # a damaged member is named here, not in a replica's log
            store.verify_ensemble(version)
        served = manifest_model(registered[0].manifest, model)   # ... and a model folder not on this machine
        app = build_app(references, versions=[r.reference for r in registered], tracking_uri=uri, model=served if model else None,
                        max_inputs=max_inputs, max_batch_size=max_batch_size,
                        batch_wait_timeout_s=batch_wait_timeout_s, token=token, max_rows_per_pass=max_rows_per_pass,
                        replicas=replicas, replica_cpus=replica_cpus, jax_cache_dir=jax_cache_dir,
                        max_body_bytes=max_body_bytes, max_queued_requests=max_queued_requests, app_name=APP_NAME,
                        grace_period_s=grace_period,
                        follow_interval_s=follow_interval or None)

    import ray
    from ray import serve as ray_serve

    from softprompt.serve.shutdown import drain_application
    from softprompt.serve.versions import drop_book

    address = ray_address or os.environ.get("RAY_ADDRESS") or "local"   # "local": our own, never another's
    shared = address != "local"                                        # joining a cluster others may use
    metrics = {"_metrics_export_port": metrics_port} if metrics_port and not shared else {}
    ray.init(address=address, include_dashboard=False, **ray_log_options(), **metrics)
    try:
        try:
            start_http(host, port)
        except PortInUse as error:
            typer.echo(f"error: {error} (choose another with --port)", err=True)
            raise typer.Exit(code=2) from error
        quiet_serve_logger()
        try:
            ray_serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError as error:   # a replica failed to start: its deployment's status holds the traceback
            typer.echo(f"error: the application did not start: {_replica_failure(error)} (Ray's logs: {RAY_LOGS})",
                       err=True)
            raise typer.Exit(code=1) from error
        stop = _stop_on_signal()
        print_json({"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs", "replicas": replicas,
                    "ensembles": [{"name": r.name, "version": r.version, "task": r.manifest.task}
                                  for r in registered], "auth": bool(token)})
        while not stop.wait(0.5):
            pass
        typer.echo(f"stopping: health answers 503; requests in flight get up to {grace_period:g} s", err=True)
        drained = drain_application(APP_NAME, app._bound_deployment.name, grace_period)
        left = sum(r.get("left", 0) for r in drained if isinstance(r, dict))
        typer.echo(f"stopped: {left} request(s) answered 503 at the end of the grace period" if left
                   else "stopped: every request in flight finished", err=True)
    finally:
        drop_book(app._bound_deployment.init_args[0].book)
        if shared:             # a shared cluster: remove only this application, never the others'
            ray_serve.delete(APP_NAME)
        else:
            ray_serve.shutdown()
        ray.shutdown()
