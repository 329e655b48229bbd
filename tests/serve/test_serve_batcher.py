"""The batched pass in-process (no Ray), on the conftest's sample ensembles: mixed ensembles in
one call equal each ensemble run alone on its own table, a failing input fails alone, two states
in one batch each use their own table."""

from __future__ import annotations

import pytest

from softprompt.core.evaluation import encode_inputs
from softprompt.core.tasks import get_task
from softprompt.ensemble.loaded import input_factory, load_ensemble
from softprompt.ensemble.predict import rows_per_pass, vote_inputs
from softprompt.serve.batcher import Item, predict_batch
from softprompt.serve.state import NotServed, WrongTask, load_state, resolve_all

from sample_ensembles import register_sample_ensemble


@pytest.fixture(scope="module")
def state(store, tiny_model, ensembles):
    references = [f"sst2-a/{ensembles['sst2-a']}", f"rte-b/{ensembles['rte-b']}"]
    return load_state(store.handle, tiny_model, references, resolve_all(store.handle, references))


def alone(model, served, inputs):
    """The ensemble's votes with nothing else in the pass: its own table, members from row 0."""
    make = input_factory(model, served.loaded, task=served.task)
    return vote_inputs(model, served.loaded.table, [make(ids) for ids in inputs])[0]


def _encoded(model, task: str, count: int) -> list[list[int]]:
    spec = get_task(task)
    return encode_inputs(model, spec, spec.examples("validation", limit=count))


def test_rows_per_pass_pads_little_with_few_shapes():
    assert [rows_per_pass(rows, 64) for rows in (1, 5, 8, 16, 25, 40, 64, 130, 160, 1000)] == \
        [1, 5, 8, 16, 32, 8, 64, 16, 32, 64]
    assert rows_per_pass(30, 16) == 16 and rows_per_pass(5, 4) == 4


def test_default_references_are_the_production_aliases(store, ensembles):
    found = store.handle.ensembles_with_alias("production")
    assert {f"{name}@production" for name in ensembles} <= set(found)


def test_state_tables_and_selection(state):
    sst2, rte = state.ensembles
    assert (sst2.first_prompt, rte.first_prompt) == (0, 3)
    assert state.table.embeddings.shape[:2] == (6, 6)              # 3 + 3 prompts, left-padded to 6
    assert state.select("rte") is rte and state.select("sst2", "sst2-a") is sst2
    with pytest.raises(NotServed):
        state.select("cb")
    with pytest.raises(WrongTask):
        state.select("sst2", "rte-b")


def test_one_pass_over_mixed_ensembles_equals_each_alone(state, tiny_model):
    sst2, rte = state.ensembles
    sst2_inputs, rte_inputs = _encoded(tiny_model, "sst2", 12), _encoded(tiny_model, "rte", 6)
    items = [Item(state, sst2, ids) for ids in sst2_inputs] + [Item(state, rte, ids) for ids in rte_inputs]
    result = predict_batch(tiny_model, items, max_rows=8)
    assert result.rows == (12 + 6) * 3 * 2                          # inputs x members x labels (T5: multi-token)
    expected = alone(tiny_model, sst2, sst2_inputs) + alone(tiny_model, rte, rte_inputs)
    assert result.votes == expected

    # a failing input (ids that are no token ids) fails alone; the others keep their answers
    broken = Item(state, sst2, ["not", "token", "ids"])
    result = predict_batch(tiny_model, [items[0], broken, items[1]], max_rows=8)
    assert isinstance(result.votes[1], ValueError)
    assert [result.votes[0], result.votes[2]] == expected[:2]


def test_items_keep_the_state_they_were_admitted_under(state, store, tiny_model):
    sst2 = state.ensembles[0]
    newer = register_sample_ensemble(store.handle, tiny_model, name="sst2-a", task="sst2", seeds=(7, 8, 9),
                                     experiment_id=store.experiment_id, length=4, alias=None)
    reloaded = state.replaced(tiny_model, load_ensemble(store.handle, f"sst2-a/{newer.version}", tiny_model))
    assert reloaded.ensembles[0].version == newer.version and state.ensembles[0].version == sst2.version
    inputs = _encoded(tiny_model, "sst2", 2)
    result = predict_batch(tiny_model, [Item(state, sst2, inputs[0]), Item(reloaded, reloaded.ensembles[0], inputs[0]),
                                        Item(state, sst2, inputs[1])], max_rows=8)
    old = alone(tiny_model, sst2, inputs)
    new = alone(tiny_model, reloaded.ensembles[0], inputs[:1])
    assert result.votes == [old[0], new[0], old[1]]
