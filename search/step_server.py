"""The step server: one Ray actor per node (per model) that computes the training steps of the
campaign's trials on that node together — one fused forward/backward of the frozen model for all
of them (`core.fused`), one copy of the weights, each trial getting exactly its own loss and
gradient; their evaluations run there too. Everything else stays in the trial: its prompt,
optimiser state, data order, checkpoints and reports, so every trial is still a Tune trial
(schedulers stop, pause and exploit it, retries and `search resume` restore it) — the server
holds no trial state.

Gathering: a trial asks for its gradient (or an evaluation) and waits. The server answers when
every live trial on it is waiting, or `window_s` after the first request, whichever comes first:
the steps in fused calls of at most `max_trials` trials, the evaluations of one task in one
prediction pass over a table of their prompts (trials in lock-step evaluate at the same step).
(Ray Serve's `@serve.batch` batches by size and time only; the "every live trial is waiting"
trigger is what makes trials in lock-step fuse without waiting out the window, hence this small
loop.) A trial is live from a request until it leaves: before each of its reports to Tune (it
joins again with its next step) and when it ends, so a trial that Tune stops, pauses or holds at a
report is never waited for, and the trial that takes its slot joins with its first step. One that
dies without leaving costs the others one window per request. One computation runs at a time.
The server keeps a `ServerRecord` (busy seconds, calls, joins and leaves); the campaign driver
saves the records in `step-servers.json` when the campaign ends.

Trials of another model, dtype or target format get another server (the actor's name holds all
three), so they never share a step. The server is a named detached actor pinned to its node and
created by the first trial that needs it; the campaign driver ends the campaign's servers when it
ends (a driver that dies leaves them to `search resume`, which reuses them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

from softprompt.core.batching import EncodedPair

NAME_PREFIX = "softprompt-steps"
NAMESPACE = "softprompt"      # fixed, so a resumed campaign's new driver finds its servers
SERVERS_FILE = "step-servers.json"   # in the campaign folder: the servers' records when the campaign ended


class FuseSettings(NamedTuple):
    """What a step server runs with (from a campaign's `fuse:` section)."""

    max_trials: int = 8              # trials per fused call
    rows_per_call: int | None = None  # rows per forward/backward (None: all rows in one call)
    window_ms: float = 20.0          # how long a request waits for the other live trials
    gpu: float = 0.0                 # the step server's GPUs (the trials then take none)


class StepAnswer(NamedTuple):
    loss: float
    grad: np.ndarray        # [P, E]
    group: int              # trials in the fused call that computed it


@dataclasses.dataclass
class ServerRecord:
    """A step server's account of itself: when it was created, the seconds it spent computing
    (fused steps and evaluations), its calls, the trial steps they computed, and every trial's
    joining (first request, or first after leaving) and leaving, as (wall time, "join" | "leave",
    trial id). Its idle fraction over a campaign is 1 - busy_s / (end - created)."""

    created: float
    busy_s: float = 0.0
    calls: int = 0
    trial_steps: int = 0
    events: list[tuple[float, str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self, **extra) -> dict:
        return dataclasses.asdict(self) | {"events": [list(event) for event in self.events]} | extra


class _Request(NamedTuple):
    trial: str
    prompt: np.ndarray      # [P, E]
    pairs: list[EncodedPair] | None          # a step's batch, or None for an evaluation
    evaluation: tuple | None                  # (task, examples, encoded inputs) of an evaluation
    answer: asyncio.Future


class StepServer:
    """The actor's class (wrapped by `ray.remote` in `step_server`): holds the frozen model."""

    def __init__(self, model: Any, *, sentinel: bool, max_trials: int, rows_per_call: int | None, window_s: float,
                 gpus: float = 0.0, jax_cache_dir: str | None = None):
        import jax

        from softprompt.core.compilation_cache import use_compilation_cache
        from softprompt.core.sentinel import model_for
        from softprompt.core.sharding import default_placement, place_for_training

        from .shared_model import unshare_model

        use_compilation_cache(jax_cache_dir)   # the campaign's cache: a new server compiles nothing seen before
        model = unshare_model(model)
        model = model_for(model, "sentinel" if sentinel else "plain")
        self._model, self._params = place_for_training(model, default_placement(gpus=gpus))   # >= 2: split
        self._cpu = jax.default_backend() == "cpu"
        self._max_trials, self._rows_per_call, self._window_s = max_trials, rows_per_call, window_s
        self._pending: list[_Request] = []
        self._live: set[str] = set()
        self._record = ServerRecord(created=time.time())
        self._changed: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None

    async def value_and_grad(self, trial: str, prompt: np.ndarray, pairs: list[EncodedPair]) -> StepAnswer:
        """Trial `trial`'s loss and gradient for `prompt` [P, E] on its batch `pairs`."""
        return await self._ask(_Request(trial, np.asarray(prompt, np.float32), list(pairs), None,
                                        asyncio.get_running_loop().create_future()))

    async def evaluate(self, trial: str, prompt: np.ndarray, *, task, examples: Sequence,
                       encoded: Sequence[list[int]]) -> dict[str, float]:
        """Trial `trial`'s evaluation (`evaluation.evaluate_prompt` of `prompt` [P, E]), predicted
        together with the other trials' evaluations of the same task waiting then."""
        return await self._ask(_Request(trial, np.asarray(prompt, np.float32), None, (task, examples, encoded),
                                        asyncio.get_running_loop().create_future()))

    async def leave(self, trial: str) -> None:
        """The trial reports, ended or stopped: the others stop waiting for it (until it asks again)."""
        if trial in self._live:
            self._record.events.append((time.time(), "leave", trial))
        self._live.discard(trial)
        if self._changed is not None:
            self._changed.set()

    async def _ask(self, request: _Request):
        if self._loop_task is None:
            self._changed = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._serve())
        if request.trial not in self._live:
            self._record.events.append((time.time(), "join", request.trial))
        self._live.add(request.trial)
        self._pending.append(request)
        self._changed.set()
        return await request.answer

    def _all_waiting(self) -> bool:
        waiting = {request.trial for request in self._pending}
        return len(waiting) >= self._max_trials or self._live <= waiting

    async def _serve(self) -> None:
        while True:
            while not self._pending:
                self._changed.clear()
                await self._changed.wait()
            deadline = time.monotonic() + self._window_s
            while not self._all_waiting() and (left := deadline - time.monotonic()) > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except asyncio.TimeoutError:
                    break
            requests, self._pending = self._pending, []
            steps = [r for r in requests if r.pairs is not None]
            tasks: dict[str, list[_Request]] = {}
            for request in requests:
                if request.evaluation is not None:
                    tasks.setdefault(request.evaluation[0].name, []).append(request)
            groups = [steps[i: i + self._max_trials] for i in range(0, len(steps), self._max_trials)]
            for group in groups + list(tasks.values()):
                await self._answer(group)

    async def _answer(self, group: list[_Request]) -> None:
        """Computes one fused call for `group` (steps, or evaluations of one task) in a worker
        thread (the loop keeps gathering) and answers each request."""
        stepping = group[0].pairs is not None
        started = time.monotonic()
        try:
            results = await asyncio.to_thread(self._steps if stepping else self._evaluations, group)
        except Exception as error:   # noqa: BLE001 — every waiting trial learns why its call failed
            for request in group:
                request.answer.set_exception(error)
            return
        finally:
            self._record.busy_s += time.monotonic() - started
            self._record.calls += 1
        self._record.trial_steps += len(group) if stepping else 0
        if stepping:
            results = [StepAnswer(result.loss, result.grad, len(group)) for result in results]
        for request, result in zip(group, results):
            if not request.answer.done():
                request.answer.set_result(result)

    async def record(self) -> dict:
        """What the server did so far (`ServerRecord.to_dict`)."""
        return self._record.to_dict(live=sorted(self._live))

    def _steps(self, group: list[_Request]):
        from softprompt.core.fused import fused_value_and_grad

        # unset: every row in one call on an accelerator, calls of a trial's batch size on a CPU
        rows = self._rows_per_call or (max(len(r.pairs) for r in group) if self._cpu else None)
        return fused_value_and_grad(self._model.ops, self._params, [r.prompt for r in group], [r.pairs for r in group],
                                    pad_id=self._model.tokenizer.pad_id, rows_per_call=rows,
                                    table_size=table_size(len(group), len(self._live), self._max_trials))

    def _evaluations(self, group: list[_Request]) -> list[dict[str, float]]:
        from softprompt.core.fused import fused_evaluate

        task = group[0].evaluation[0]
        return fused_evaluate(self._model, [r.prompt for r in group], task,
                              [(r.evaluation[1], r.evaluation[2]) for r in group])


def table_size(group: int, live: int, max_trials: int) -> int:
    """Prompts in a fused call's table for `group` waiting trials of `live`: a decoder-only model
    runs each of them once per call, so not `max_trials` but the live trials rounded up to a power
    of two (a few compiled table shapes as trials come and go; docs/results.md, Fused trials, has the
    measurements behind it).

    >>> [table_size(group, live, 8) for group, live in ((3, 3), (2, 3), (1, 1), (5, 6), (8, 20))]
    [4, 4, 1, 8, 8]
    """
    return max(group, min(max_trials, 1 << (max(live, 1) - 1).bit_length()))


def server_name(campaign: str, node_id: str, *, model: str, dtype: str, target_format: str) -> str:
    """The actor name of a campaign's step server on a node for one model, dtype and target format."""
    return f"{NAME_PREFIX}:{campaign}:{node_id[:16]}:{model}:{dtype}:{target_format}"


def step_server(campaign: str, model_ref: Any, settings: FuseSettings, *, model: str, dtype: str,
                target_format: str, jax_cache_dir: str | None = None):
    """This node's step server for the campaign's model (created on first use, with the campaign's
    JAX compilation cache `jax_cache_dir`)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(StepServer).options(
        name=server_name(campaign, node, model=model, dtype=dtype, target_format=target_format),
        namespace=NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0, num_gpus=settings.gpu,
        max_concurrency=1000, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    return actor.remote(model_ref, sentinel=target_format == "sentinel", max_trials=settings.max_trials,
                        rows_per_call=settings.rows_per_call, window_s=settings.window_ms / 1000,
                        gpus=settings.gpu, jax_cache_dir=jax_cache_dir)


def _servers(campaign: str) -> list[str]:
    """The actor names of the campaign's step servers (every node)."""
    import ray

    return [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == NAMESPACE and actor["name"].startswith(f"{NAME_PREFIX}:{campaign}:")]


def server_records(campaign: str, *, timeout_s: float = 10.0) -> list[dict]:
    """Each of the campaign's step servers' `ServerRecord` (as a dict with its `name` and the
    wall time it was read, `read`); a server that does not answer within `timeout_s` is left out."""
    import ray

    records = []
    for name in _servers(campaign):
        try:
            record = ray.get(ray.get_actor(name, namespace=NAMESPACE).record.remote(), timeout=timeout_s)
        except (ray.exceptions.RayError, ValueError):
            continue     # died or ended meanwhile: its record went with it
        records.append(record | {"name": name, "read": time.time()})
    return records


def leave_step_servers(campaign: str, trial: str) -> None:
    """Tells the campaign's step servers that `trial` left (the driver's word for a trial whose
    process could not say so: `fused_departures.py`); does not wait for them."""
    import ray

    for name in _servers(campaign):
        try:
            ray.get_actor(name, namespace=NAMESPACE).leave.remote(trial)
        except ValueError:
            continue     # ended meanwhile


def end_step_servers(campaign: str) -> int:
    """Kills the campaign's step servers (every node); returns how many there were."""
    import ray

    names = _servers(campaign)
    for name in names:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    return len(names)


class FusedSteps:
    """A trial's `core.train.StepService` backed by its node's step server; counts the group
    sizes its steps were computed in (`group_since_report`)."""

    def __init__(self, server, trial: str):
        self._server, self._trial = server, trial
        self._groups: list[int] = []

    def __call__(self, prompt: np.ndarray, pairs: list[EncodedPair]) -> tuple[float, np.ndarray]:
        import ray

        answer = ray.get(self._server.value_and_grad.remote(self._trial, prompt, pairs))
        self._groups.append(answer.group)
        return answer.loss, answer.grad

    def evaluate(self, prompt: np.ndarray, *, task, examples: Sequence, encoded: Sequence[list[int]]) -> dict:
        import ray

        return ray.get(self._server.evaluate.remote(self._trial, np.asarray(prompt), task=task, examples=examples,
                                                    encoded=encoded))

    def leave(self) -> None:
        """This trial asks nothing until its next step (it reports), or ever (it ended, failed or
        was stopped)."""
        import ray

        try:
            ray.get(self._server.leave.remote(self._trial))
        except ray.exceptions.RayActorError:
            pass    # the server died: it holds nothing of this trial's any more

    def group_since_report(self) -> float:
        """Mean trials per fused call of this trial's steps since the last call of this method."""
        mean = float(np.mean(self._groups)) if self._groups else 0.0
        self._groups = []
        return mean
