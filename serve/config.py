"""Every serving setting in one place: `ServeConfig`, each field with its default, its bounds and
one line saying what it does. Everything else derives from it — `softprompt serve`'s options
(default, help, min/max), the Ray Serve application builder's arguments (`app.AppArgs`, a
subclass), `softprompt.serve.deploy:app`'s environment (so `serve build` and the KubeRay manifest),
and `lifecycle` (host, port, grace period). Change a default here and every one of them follows.

    ServeConfig(max_inputs=8, token="t")              # a bad value: ServeConfigError, one line
    ServeConfig.from_environment(os.environ)          # SOFTPROMPT_MAX_INPUTS=8, SOFTPROMPT_API_TOKEN=...
    ServeConfig().replace(follow_interval_s=0)        # a validated copy
    option_spec("max_inputs")                         # {"default": 64, "help": ..., "min": 1} for a CLI option

Imports only pydantic: the command line builds its options from it when it starts.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "SOFTPROMPT_"            # setting `max_inputs` <- $SOFTPROMPT_MAX_INPUTS
TOKEN_ENV = "SOFTPROMPT_API_TOKEN"    # the token's variable (the command line reads it too)
ENSEMBLES_ENV = "SOFTPROMPT_ENSEMBLES"             # what `deploy:app` serves (comma-separated) ...
DEFAULT_ENSEMBLES = "sst2-ensemble@production"     # ... when it is unset
EMPTY_TOKEN = "the token is empty: give a real token, or none to serve without authentication"


class ServeConfigError(ValueError):
    """A setting with a value it cannot take (one line naming the setting)."""


def _one_line(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                     + (f" (got {e['input']!r})" if e["type"] not in ("value_error", "extra_forbidden") else "")
                     for e in error.errors())


class ServeConfig(BaseModel):
    """How a server runs: its listener, its limits, its batching, its replicas and its shutdown.
    Frozen; the token is a `SecretStr` (never in a repr or a log) and reaches replicas only as
    its sha256 (`app.ReplicaConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", min_length=1,
                      description="Interface to bind; 0.0.0.0 exposes it (use --token).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    replicas: int = Field(1, ge=1, description="Replicas, each with one copy of the model.")
    token: Optional[SecretStr] = Field(None, description="Require 'Authorization: Bearer TOKEN' on /v1/*.")
    max_inputs: int = Field(64, ge=1, description="Inputs per request (more: 413).")
    max_batch_size: int = Field(32, ge=1, description="Inputs gathered into one pass.")
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, description="How long a batch waits to fill.")
    max_rows_per_pass: int = Field(32, ge=1, description="Rows (inputs x members) per forward chunk.")
    max_body_bytes: int = Field(1 << 20, ge=1, description="Larger request bodies get 413.")
    max_queued_requests: int = Field(512, ge=1, description="Queued requests per replica (more: 503).")
    model: Optional[str] = Field(None, description="Frozen model [default: the ensembles' own].")
    replica_cpus: float = Field(1.0, ge=0.0, description="Ray CPUs reserved per replica.")
    devices: int = Field(0, ge=0, description="GPUs per replica (0: none); the weights are split over them.")
    jax_cache_dir: Optional[str] = Field("runs/jax_cache", description="JAX compilation cache for replicas.")
    grace_period_s: float = Field(30.0, ge=0.0, description="On SIGTERM: seconds for requests in flight.")
    follow_interval_s: float = Field(10.0, ge=0.0,
                                     description="Poll each alias every S seconds; serve where it moves (0: off).")
    app_name: str = Field("softprompt", min_length=1, description="The Ray Serve application's name.")

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as error:
            raise ServeConfigError(_one_line(error)) from None

    @field_validator("token")
    @classmethod
    def _real_token(cls, token: Optional[SecretStr]) -> Optional[SecretStr]:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError(EMPTY_TOKEN)      # an empty token never means "no authentication"
        return token

    def replace(self, **changes: Any) -> "ServeConfig":
        """A validated copy with `changes` (ServeConfig's own fields only)."""
        return ServeConfig(**{name: getattr(self, name) for name in ServeConfig.model_fields} | changes)

    @property
    def token_value(self) -> Optional[str]:
        return self.token.get_secret_value() if self.token is not None else None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "ServeConfig":
        """The defaults, with every setting whose variable (`environment_variable`) is set."""
        return cls(**{name: environ[environment_variable(name)] for name in ServeConfig.model_fields
                      if environment_variable(name) in environ})


def environment_variable(name: str) -> str:
    """The variable `ServeConfig.from_environment` reads setting `name` from."""
    return TOKEN_ENV if name == "token" else ENV_PREFIX + name.upper()


def option_spec(name: str) -> dict[str, Any]:
    """Setting `name`'s default, help line and bounds, as keyword arguments for a CLI option."""
    field = ServeConfig.model_fields[name]
    spec: dict[str, Any] = {"default": field.default, "help": field.description}
    for bound in field.metadata:          # annotated_types' Ge / Le, from Field(ge=, le=)
        for attribute, key in (("ge", "min"), ("le", "max")):
            if getattr(bound, attribute, None) is not None:
                spec[key] = getattr(bound, attribute)
    return spec
