"""A search campaign: its YAML file, its schema, and the checks made before anything starts.

See `examples/campaigns/tiny-rte.yaml` for every field with a comment. Every error is a
`CampaignError` whose message starts with the offending field (`overrides.batch_size: ...`).

Example:
    >>> campaign = load_campaign("examples/campaigns/tiny-rte.yaml")
    >>> campaign.name, campaign.tasks
    ('tiny-rte', ['rte'])
    >>> sorted(campaign.axes())[:3]
    ['batch_size', 'decay_factor', 'learning_rate']
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from softprompt.core.config import TrainConfig
from softprompt.core.prompt_init import INITIALISERS
from softprompt.core.tasks import UnknownTaskError, get_task, is_task_file
from softprompt.core.tasks.slices import parse_split
from softprompt.core.text_prompts import template_fields
from softprompt.store.uris import DEFAULT_STORAGE_PATH

from . import space as space_lib
from .init_prompt import INIT_FROM, init_from_problem

# TrainConfig fields a campaign sets elsewhere (tasks, model, ...) rather than in `fixed`.
_TOP_LEVEL = ("task", "model", "dtype", "data_dir", "data_source", "eval_every", "max_eval_examples", "seed")
FIXABLE = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _TOP_LEVEL)


class CampaignError(ValueError):
    """A campaign file that cannot run; the message starts with the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AxisSpec(_Strict):
    """One searched axis: exactly one of `choice` (a random draw), `grid` (every value in turn),
    `loguniform` or `uniform`."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "AxisSpec":
        given = [k for k in ("choice", "grid", "loguniform", "uniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, grid, loguniform, uniform")
        for kind in ("choice", "grid"):
            if getattr(self, kind) is not None and not getattr(self, kind):
                raise ValueError(f"empty {kind}")
        for kind in ("loguniform", "uniform"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"empty or inverted range {list(bounds)} (low must be < high)")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self

    def axis(self) -> space_lib.Axis:
        if self.choice is not None:
            return space_lib.Choice(tuple(self.choice))
        if self.grid is not None:
            return space_lib.Grid(tuple(self.grid))
        if self.loguniform is not None:
            return space_lib.LogUniform(*self.loguniform)
        return space_lib.Uniform(*self.uniform)


class Scale(_Strict):
    """Shrinks Table 6 for a small machine: its step axes (steps, warmup_steps, steps_per_decay) are
    multiplied by `steps`, its batch sizes by `batch_size` (rounded, at least 1; overrides and
    fixed values are taken literally)."""

    steps: float = Field(1.0, gt=0, le=1)
    batch_size: float = Field(1.0, gt=0, le=1)


class Scheduler(_Strict):
    type: Literal["asha", "median", "none", "pbt"] = "asha"
    grace_period: int = Field(1, ge=1)              # ASHA, median: evaluations before a trial can be stopped
    reduction_factor: float = Field(2.0, gt=1)      # ASHA: keep the top 1/reduction_factor at each rung
    min_samples: int = Field(3, ge=1)               # median: other trials that must have reached an evaluation
    perturbation_interval: int = Field(2, ge=1)     # PBT: evaluations between exploit/explore steps


class Search(_Strict):
    type: Literal["random", "optuna"] = "random"
    seed: int | None = None                          # the sampler's seed (reproducible campaigns)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)                    # a fraction shares one GPU between trials
    tpu: int = Field(0, ge=0)
    device: str | None = None                        # h100, a100-80g, ...: launch refuses a plan that cannot fit


class Sharding(_Strict):
    """How a trial (or the fused group's step server) splits the frozen weights over its devices
    (core/sharding.py). Unset model_axis: every device Ray assigned when `gpu` asks for 2 or more."""

    model_axis: int | None = Field(None, ge=1)       # devices the weights are split over (1: replicated)
    strategy: Literal["fsdp", "tensor"] | None = None  # default fsdp


class Baseline(_Strict):
    """A designed text prompt scored beside the tuned ones on the same validation examples."""

    template: str = Field(min_length=1)              # names record fields: "Review: {sentence}\nSentiment:"
    shots: int = Field(0, ge=0)                      # seeded training demonstrations shown first
    seed: int = 0                                    # which demonstrations
    name: str | None = None                          # default: "<shots>-shot: <template>"

    @property
    def label(self) -> str:
        return self.name or f"{self.shots}-shot: {self.template!r}"


class EnsembleSettings(_Strict):
    name: str | None = None                          # registered name [default: <task>-ensemble]
    top: int = Field(5, ge=1)                        # the most votes of each task's ensemble
    select: Literal["greedy", "top"] = "greedy"      # greedy needs a selection split: fixed.selection_examples,
    selection_split: str | None = None               #   or this, a split or slice, e.g. "validation[500:]"
    vote: Literal["majority", "soft", "mean_logprob", "learned"] = "majority"   # learned: with select greedy
    promote_if_better: bool = False                  # move `production` only if the new version beats its version
    promote_max_p: float = Field(0.05, gt=0, le=1)   #   on the selection split (paired test, p at most this)

    @field_validator("selection_split")
    @classmethod
    def _a_split_or_slice(cls, value: str | None) -> str | None:
        if value is not None:
            parse_split(value)          # a TaskDataError (a ValueError) names the malformed slice
        return value

    @model_validator(mode="after")
    def _a_promotion_compares_on_a_split(self) -> "EnsembleSettings":
        if self.promote_if_better and self.select == "top" and not self.selection_split:
            raise ValueError("promote_if_better compares versions on the selection split, which top-N "
                             "selection does not use: name one in selection_split, or use select: greedy")
        return self


class Fuse(_Strict):
    """Fused trials (search/step_server.py): the trials on a node compute their steps together in
    one forward/backward of one copy of the model. `auto`: on when trials ask for GPUs (on a
    compute-bound CPU fusing saves memory copies, not time; docs/campaigns.md)."""

    enabled: Literal[True, False, "auto"] = "auto"
    max_trials: int = Field(8, ge=1)                 # trials per fused call
    rows_per_call: int | None = Field(None, ge=1)    # None: every row in one call (accelerators)
    window_ms: float = Field(20.0, ge=0)             # how long a step waits for the other live trials
    gpu: float | None = Field(None, ge=0)            # the step server's GPUs (None: resources.gpu, at least 1)


def _absolute(path: str) -> str:
    """A relative path that exists from here, made absolute: trials run in folders of their own."""
    return str(Path(path).resolve()) if not os.path.isabs(path) and os.path.exists(path) else path


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) else value


class Campaign(_Strict):
    """A validated campaign file."""

    name: str
    tasks: list[str] = Field(min_length=1)
    model: str = "gemma3-270m"
    dtype: Literal["float32", "bfloat16", "auto"] = "auto"
    data_dir: str | None = None
    data_source: str = "jsonl"                       # jsonl | tfds | tfds:NAME (data_dir: TFDS's folder)
    space: Literal["table6", "none"] = "table6"
    overrides: dict[str, AxisSpec] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    scale: Scale = Scale()
    num_samples: int = Field(1, ge=1)
    seeds: int = Field(1, ge=1)                      # seeds per sampled configuration
    seed: int = 0                                    # the first seed
    scheduler: Scheduler = Scheduler()
    search: Search = Search()
    resources: Resources = Resources()
    sharding: Sharding = Sharding()
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    eval_every: int = Field(1000, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)
    tracking_uri: str | None = None
    storage_path: str = DEFAULT_STORAGE_PATH
    jax_cache_dir: str | None = None                 # default $JAX_COMPILATION_CACHE_DIR, else <storage_path>/jax_cache
    share_weights: bool = True                       # one copy of the frozen weights per node
    ensemble: EnsembleSettings | None = None
    fuse: Fuse = Fuse()
    baselines: list[Baseline] = Field(default_factory=list)   # designed prompts, the honest comparison

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (it names a folder and an experiment)")
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, value: Any) -> Any:
        value = _one_or_many(value)
        if not isinstance(value, list):
            return value
        return [_absolute(task) if isinstance(task, str) and is_task_file(task) else task for task in value]

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:   # a folder or .gguf relative to here: absolute, for trials and replicas
        from softprompt.core.models import model_reference

        return model_reference(value) if isinstance(value, str) else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: Any) -> Any:
        return _absolute(value) if isinstance(value, str) else value

    @field_validator("overrides", mode="before")
    @classmethod
    def _plain_lists(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: {"choice": v} if isinstance(v, list) else v for k, v in value.items()}
        return value

    @field_validator("scheduler", "search", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse_short_form(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, (bool, str)) else value

    def fused(self) -> bool:
        """Whether the trials' steps are fused (`fuse.enabled`, `auto`: when trials ask for GPUs)."""
        return self.fuse.enabled is True or (self.fuse.enabled == "auto" and self.resources.gpu > 0)

    def step_server_gpus(self) -> float:
        """GPUs of each node's step server when fused (the trials then take none)."""
        if self.fuse.gpu is not None:
            return self.fuse.gpu
        return max(1.0, self.resources.gpu) if self.resources.gpu > 0 else 0.0

    def process_gpus(self) -> float:
        """GPUs of the process holding the weights: the step server when fused, else each trial."""
        return self.step_server_gpus() if self.fused() else self.resources.gpu

    # The search space ---------------------------------------------------------------------------

    def axes(self) -> dict[str, space_lib.Axis]:
        """Every searched axis: Table 6 scaled by `scale`, then `overrides` (literal, never scaled),
        less the settings in `fixed`."""
        base = dict(space_lib.TABLE6) if self.space == "table6" else {}
        base = space_lib.scale_axes(base, steps=self.scale.steps, batch_size=self.scale.batch_size)
        base |= {name: spec.axis() for name, spec in self.overrides.items()}
        return {name: axis for name, axis in base.items() if name not in self.fixed}

    def constants(self) -> dict[str, Any]:
        """Settings every trial shares: model, evaluation cadence, and the `fixed` section."""
        return {"model": self.model, "dtype": self.dtype, "data_dir": self.data_dir, "data_source": self.data_source,
                "eval_every": self.eval_every, "max_eval_examples": self.max_eval_examples} | self.fixed

    def grid(self) -> dict[str, list]:
        """Axes every sampled configuration is repeated over: the tasks and the seeds."""
        return {"task": list(self.tasks), "seed": list(range(self.seed, self.seed + self.seeds))}

    def distinguishing_axes(self) -> list[str]:
        """The config keys that tell this campaign's trials apart: searched axes, and the task
        and seed when there are several."""
        repeated = [name for name, values in self.grid().items() if len(values) > 1]
        return [name for name in ("task",) if name in repeated] + list(self.axes()) + \
            [name for name in ("seed",) if name in repeated]

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune `param_space`."""
        return space_lib.tune_space(self.axes(), fixed=self.constants(), grid=self.grid())

    def max_steps(self) -> int:
        axis = self.axes().get("steps")
        return int(self.fixed.get("steps", space_lib.max_value(axis) if axis else TrainConfig.steps))

    def max_evaluations(self) -> int:
        """Evaluations of the longest trial (ASHA's `max_t` in training iterations)."""
        return -(-self.max_steps() // self.eval_every)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> "Campaign":
        return Campaign.model_validate(self.to_dict() | changes)


def parse_campaign(values: Mapping[str, Any], *, source: str = "campaign") -> Campaign:
    """A checked `Campaign` from parsed YAML; raises CampaignError naming the field."""
    if not isinstance(values, Mapping):
        raise CampaignError(source, "a campaign file is a YAML mapping")
    try:
        campaign = Campaign.model_validate(dict(values))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or source
        raise CampaignError(field, first["msg"].removeprefix("Value error, ")) from None
    _check_model(campaign)
    _check_sharding(campaign)
    _check_tasks(campaign)
    _check_hyperparameters(campaign)
    return campaign


def load_campaign(path: str | os.PathLike, **changes: Any) -> Campaign:
    """Reads and checks a campaign YAML file (and the files its `base` names); `changes` replace
    top-level fields (e.g. `name`)."""
    path = Path(path)
    values = _read_with_base(path, seen=())
    if isinstance(values, dict):
        values |= {key: value for key, value in changes.items() if value is not None}
    return parse_campaign(values, source=str(path))


def _read_with_base(path: Path, *, seen: tuple[Path, ...]) -> Any:
    """A campaign file's YAML with its `base` (a campaign file, relative to this one) merged under it."""
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as error:
        raise CampaignError(str(path), f"cannot read the file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise CampaignError(str(path), f"not valid YAML ({error})") from error
    if not isinstance(values, dict) or "base" not in values:
        return values
    reference = values.pop("base")
    if not isinstance(reference, str) or not reference:
        raise CampaignError(f"{path}: base", "the path of another campaign file")
    base_path = path.parent / reference
    if base_path.resolve() in seen + (path.resolve(),):
        raise CampaignError(f"{path}: base", f"{reference} is built on this file itself")
    if not base_path.is_file():
        raise CampaignError(f"{path}: base", f"no campaign file {base_path}")
    base = _read_with_base(base_path, seen=seen + (path.resolve(),))
    if not isinstance(base, dict):
        raise CampaignError(str(base_path), "a campaign file is a YAML mapping")
    return merge_campaign_values(base, values)


def merge_campaign_values(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` over `base`: a field replaces the base's, but `fixed` and `overrides` merge
    setting by setting, and a setting one of them names leaves the base's other section (a file
    may search what its base fixed). The name is never inherited: each campaign has its own.

    >>> merge_campaign_values({"name": "a", "seeds": 3, "fixed": {"steps": 300, "init": "class_labels"}},
    ...                       {"name": "b", "overrides": {"init": {"grid": ["sampled_vocab"]}}, "fixed": {"steps": 150}})
    {'seeds': 3, 'fixed': {'steps': 150}, 'name': 'b', 'overrides': {'init': {'grid': ['sampled_vocab']}}}
    """
    merged = {key: value for key, value in base.items() if key != "name"} | dict(values)
    for section, other in (("fixed", "overrides"), ("overrides", "fixed")):
        own = values.get(section) or {}
        inherited = {key: value for key, value in (base.get(section) or {}).items()
                     if key not in (values.get(other) or {})}
        if own or inherited:
            merged[section] = inherited | own
    return merged


def _check_model(campaign: Campaign) -> None:
    from softprompt.core.models import UnknownModelError, check_model_name

    try:
        check_model_name(campaign.model)
    except UnknownModelError as error:
        raise CampaignError("model", str(error)) from None


def _check_sharding(campaign: Campaign) -> None:
    """A model axis must divide the devices of the process holding the weights (when it has GPUs)."""
    gpus, axis = campaign.process_gpus(), campaign.sharding.model_axis
    if axis is not None and gpus >= 1 and (not float(gpus).is_integer() or int(gpus) % axis):
        where = "fuse.gpu" if campaign.fused() and campaign.fuse.gpu is not None else "resources.gpu"
        raise CampaignError("sharding.model_axis", f"{axis} does not divide the {gpus:g} GPUs of {where}")


def _check_tasks(campaign: Campaign) -> None:
    for index, task in enumerate(campaign.tasks):
        try:
            spec = get_task(task, source=campaign.data_source)
        except UnknownTaskError as error:
            raise CampaignError(f"tasks.{index}", str(error)) from None
        except (ValueError, OSError) as error:
            raise CampaignError(f"tasks.{index}", f"task {task!r}: {error}") from None
        for split in ("train", "validation"):
            try:
                next(iter(spec.source.records(split, data_dir=campaign.data_dir)))
            except StopIteration:
                raise CampaignError(f"tasks.{index}", f"task {spec.name!r} has no {split} records") from None
            except (ValueError, OSError) as error:
                raise CampaignError(f"tasks.{index}", f"task {spec.name!r}: {error}") from None
        for number, baseline in enumerate(campaign.baselines):
            field = f"baselines.{number}.template"
            if spec.free_text:
                raise CampaignError(field, f"designed prompts are scored by rank classification; task "
                                    f"{spec.name!r} is free text")
            unknown = [name for name in template_fields(baseline.template) if name not in spec.fields]
            if unknown:
                raise CampaignError(field, f"names field(s) {', '.join(map(repr, unknown))}; task {spec.name!r} "
                                    f"records have {', '.join(map(repr, spec.fields))}")


def _check_hyperparameters(campaign: Campaign) -> None:
    for name in campaign.overrides:
        if name not in space_lib.SEARCHABLE:
            raise CampaignError(f"overrides.{name}", "unknown hyperparameter; searchable axes are "
                                + ", ".join(space_lib.SEARCHABLE))
    for name in campaign.fixed:
        if name not in FIXABLE + (INIT_FROM,):
            hint = " (set it at the top level)" if name in _TOP_LEVEL else ""
            raise CampaignError(f"fixed.{name}", f"unknown hyperparameter{hint}; fixable settings are "
                                + ", ".join(FIXABLE))
    axes = campaign.axes()
    problem = space_lib.check_decay_coupling(axes | {k: space_lib.Fixed(v) for k, v in campaign.fixed.items()
                                                     if k in ("decay_factor", "steps_per_decay")})
    if problem:
        where = "fixed" if "steps_per_decay" in campaign.fixed else (
            "overrides" if "steps_per_decay" in campaign.overrides else "space")
        raise CampaignError(f"{where}.steps_per_decay", problem)
    for name, axis in axes.items():
        field = f"overrides.{name}" if name in campaign.overrides else f"space.{name}"
        for value in space_lib.axis_values(axis):
            _check_value(campaign, field, name, value)
    for name, value in campaign.fixed.items():
        if name != INIT_FROM:
            _check_value(campaign, f"fixed.{name}", name, value)
    if campaign.search.type == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise CampaignError("search.type", "optuna is not installed (pip install 'softprompt[optuna]')")
        if len(campaign.tasks) > 1 or campaign.seeds > 1:
            raise CampaignError("search.type", "optuna samples one task and one seed per trial: "
                                "use one task and seeds: 1, or search: random")
        grids = [name for name, axis in axes.items() if isinstance(axis, space_lib.Grid)]
        if grids:
            raise CampaignError(f"overrides.{grids[0]}", "optuna samples every axis: use choice, or search: random")
    _check_inits(campaign, axes)
    if (campaign.ensemble and campaign.ensemble.select == "greedy" and not campaign.fixed.get("selection_examples")
            and not campaign.ensemble.selection_split):
        raise CampaignError("ensemble.select", "greedy selection scores candidates on a selection split: set "
                            "fixed.selection_examples (training records the trials hold out, e.g. 200) or "
                            "ensemble.selection_split (e.g. 'validation[500:]'), or use select: top")
    if campaign.fixed.get("eval_split") == "selection" and not campaign.fixed.get("selection_examples"):
        raise CampaignError("fixed.eval_split", "'selection' picks checkpoints on the held-out selection split: "
                            "set fixed.selection_examples (e.g. 200)")
    if campaign.scheduler.type == "pbt" and not isinstance(axes.get("learning_rate"), (
            space_lib.Choice, space_lib.LogUniform, space_lib.Uniform)):
        raise CampaignError("scheduler.type", "pbt perturbs learning_rate, so learning_rate must be searched")
    if campaign.scheduler.type == "pbt" and "reparam" in axes:
        raise CampaignError("overrides.reparam", "pbt copies trials' checkpoints into each other: fix reparam "
                            "(trials with and without the MLP cannot exchange their parameters)")


def _check_inits(campaign: Campaign, axes: Mapping[str, space_lib.Axis]) -> None:
    """Every init a trial may draw must work for every task: refused here, before any trial runs."""
    if INIT_FROM in campaign.fixed:   # a registered prompt sets the init (init_prompt.py)
        problem = init_from_problem(campaign.fixed, init_searched="init" in axes)
        if problem:
            raise CampaignError(*problem)
        return
    field = "overrides.init" if "init" in axes else "fixed.init"
    inits = space_lib.axis_values(axes["init"]) if "init" in axes else (campaign.fixed.get("init", TrainConfig.init),)
    needs = {"from_text": "init_text", "from_file": "init_path"}
    for init in inits:
        if init in needs and not campaign.fixed.get(needs[init]):
            raise CampaignError(field, f"init {init!r} needs fixed.{needs[init]}")
        if init == "class_labels":
            free = [task for task in campaign.tasks if get_task(task).free_text]
            if free:
                raise CampaignError(field, f"init 'class_labels' needs label words; task {free[0]!r} is free text "
                                    "(use from_text with the task's words, or sampled_vocab)")


def _check_value(campaign: Campaign, field: str, name: str, value: Any) -> None:
    """Builds a TrainConfig with `name=value` so each value is checked where TrainConfig checks it."""
    if name == "init" and value not in INITIALISERS:
        raise CampaignError(field, f"unknown init {value!r}; choose from {', '.join(INITIALISERS)}")
    if name in ("decay_factor", "steps_per_decay"):
        if value is None:
            return
        probe = {"decay_factor": 0.5, "steps_per_decay": 1, name: value}
    elif name == "eval_split":     # its tie to selection_examples is checked on the campaign as a whole
        probe = {"eval_split": value, "selection_examples": 1}
    else:
        probe = {name: value}
    try:
        TrainConfig(task=campaign.tasks[0], **probe)
    except (TypeError, ValueError) as error:
        raise CampaignError(field, f"bad value {value!r} ({error})") from None
    if name in space_lib.INTEGER_AXES and not (isinstance(value, int) and not isinstance(value, bool)):
        raise CampaignError(field, f"bad value {value!r} (must be an integer)")
    if name == "learning_rate" and not space_lib.is_finite_positive(value):
        raise CampaignError(field, f"bad value {value!r} (must be a positive number)")


def check_resources(campaign: Campaign, available: Mapping[str, float]) -> None:
    """Rejects a trial that asks for more than the cluster has (`ray.cluster_resources()`)."""
    wanted = {"cpu": ("CPU", campaign.resources.cpu), "gpu": ("GPU", campaign.resources.gpu),
              "tpu": ("TPU", campaign.resources.tpu)}
    if campaign.fused():   # the trials take no GPU; each node's step server takes fuse.gpu
        wanted["gpu"] = ("GPU", 0)
        if campaign.step_server_gpus() > available.get("GPU", 0):
            field = "fuse.gpu" if campaign.fuse.gpu is not None else "resources.gpu"
            raise CampaignError(field, f"the step server of fused trials asks for {campaign.step_server_gpus():g} "
                                f"GPU but the cluster has {available.get('GPU', 0):g}")
    for field, (key, amount) in wanted.items():
        if amount and amount > available.get(key, 0):
            raise CampaignError(f"resources.{field}", f"a trial asks for {amount:g} {key} but the cluster "
                                f"has {available.get(key, 0):g}")
