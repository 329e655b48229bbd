"""Built-in and user tasks: formats checked by hand against the real data files, data sources,
and the errors a user sees."""

from __future__ import annotations

import dataclasses
import filecmp
import importlib.util
import json
from pathlib import Path

import pytest

from softprompt.core.tasks import (
    Example,
    TaskDataError,
    TaskSpec,
    UnknownTaskError,
    builtin_task_names,
    get_task,
)
from softprompt.core.tasks import sources

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "core" / "assets" / "data"
SHARED = Path("/work/shared/data")  # the project's full SuperGLUE/GLUE files
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not on this machine")

# Raw field values copied from the first records of the data files.
BOOLQ_PASSAGE = (
    "Ethanol fuel -- All biomass goes through at least some of these steps: it needs to be "
    "grown, collected, dried, fermented, distilled, and burned. All of these steps require "
    "resources and an infrastructure. The total amount of energy input into the process "
    "compared to the energy released by burning the resulting ethanol fuel is known as the "
    "energy balance (or ``energy returned on energy invested''). Figures compiled in a 2007 "
    "report by National Geographic Magazine point to modest results for corn ethanol produced"
    " in the US: one unit of fossil-fuel energy is required to create 1.3 energy units from "
    "the resulting ethanol. The energy balance for sugarcane ethanol produced in Brazil is "
    "more favorable, with one unit of fossil-fuel energy required to create 8 from the "
    "ethanol. Energy balance estimates are not easily produced, thus numerous such reports "
    "have been generated that are contradictory. For instance, a separate survey reports that"
    " production of ethanol from sugarcane, which requires a tropical climate to grow "
    "productively, returns from 8 to 9 units of energy for each unit expended, as compared to"
    " corn, which only returns about 1.34 units of fuel energy for each unit of energy "
    "expended. A 2006 University of California Berkeley study, after analyzing six separate "
    "studies, concluded that producing ethanol from corn uses much less petroleum than "
    "producing gasoline."
)
MULTIRC_PARAGRAPH = (
    "What causes a change in motion? The application of a force. Any time an object changes "
    "motion, a force has been applied. In what ways can this happen? Force can cause an "
    "object at rest to start moving. Forces can cause objects to speed up or slow down. "
    "Forces can cause a moving object to stop. Forces can also cause a change in direction. "
    "In short, forces cause changes in motion. The moving object may change its speed, its "
    "direction, or both. We know that changes in motion require a force. We know that the "
    "size of the force determines the change in motion. How much an objects motion changes "
    "when a force is applied depends on two things. It depends on the strength of the force. "
    "It also depends on the objects mass. Think about some simple tasks you may regularly do."
    " You may pick up a baseball. This requires only a very small force. "
)
MULTIRC_QUESTION = "Would the mass of a baseball affect how much force you have to use to pick it up?"

# (task, data folder, split, position in the split, expected inputs, expected targets)
FORMAT_CASES = [
    (
        "rte", SHIPPED, "validation", 0,
        "hypothesis: Christopher Reeve had an accident. premise: Dana Reeve, the widow of the "
        "actor Christopher Reeve, has died of lung cancer at age 44, according to the "
        "Christopher Reeve Foundation.",
        "not_entailment",
    ),
    (
        "rte", SHIPPED, "train", 1,
        "hypothesis: Pope Benedict XVI is the new leader of the Roman Catholic Church. premise: "
        "A place of sorrow, after Pope John Paul II died, became a place of celebration, as "
        "Roman Catholic faithful gathered in downtown Chicago to mark the installation of new "
        "Pope Benedict XVI.",
        "entailment",
    ),
    (
        "glue_rte", SHIPPED, "validation", 0,
        "sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung "
        "cancer at age 44, according to the Christopher Reeve Foundation. sentence2: "
        "Christopher Reeve had an accident.",
        "not_entailment",
    ),
    (  # the CB example printed in the T5 paper's appendix, without its "cb " prefix
        "cb", SHIPPED, "validation", 0,
        "hypothesis: Valence was helping premise: Valence the void-brain, Valence the virtuous "
        "valet. Why couldn't the figger choose his own portion of titanic anatomy to shaft? Did "
        "he think he was helping?",
        "contradiction",
    ),
    (
        "cb", SHIPPED, "validation", 1,
        "hypothesis: there is a shipment premise: ``Who knows? The point is, do we go with it "
        "or not?'' Do we assume there is a shipment?",
        "neutral",
    ),
    (
        "sst2", SHIPPED, "validation", 0,
        "sentence: it 's a charming and often affecting journey . ",  # SST-2 keeps its spaces
        "positive",
    ),
    ("sst2", SHIPPED, "validation", 1, "sentence: unflinchingly bleak and desperate ", "negative"),
    ("sst2", SHIPPED, "train", 0, "sentence: hide new secretions from the parental units ", "negative"),
    (
        "boolq", SHARED, "validation", 0,
        "passage: " + BOOLQ_PASSAGE + " question: does ethanol take more energy make that produces",
        "False",
    ),
    (
        "copa", SHARED, "validation", 0,
        "choice1: The toilet filled with water. choice2: Water flowed from the spout. premise: "
        "The man turned on the faucet. question: effect",
        "choice2",
    ),
    (
        "copa", SHARED, "train", 0,
        "choice1: The sun was rising. choice2: The grass was cut. premise: My body cast a shadow "
        "over the grass. question: cause",
        "choice1",
    ),
    (
        "wic", SHARED, "validation", 0,
        "sentence1: An emerging professional class. sentence2: Apologizing for losing your "
        "temper, even though you were badly provoked, showed real class. word: class",
        "False",
    ),
    (
        "multirc", SHARED, "validation", 0,
        "question: " + MULTIRC_QUESTION + " answer: No paragraph: " + MULTIRC_PARAGRAPH,
        "False",
    ),
    (
        "multirc", SHARED, "validation", 2,
        "question: " + MULTIRC_QUESTION + " answer: Less the mass, less the force applied "
        "paragraph: " + MULTIRC_PARAGRAPH,
        "True",
    ),
    (  # validation keeps every candidate; this one (label 0) is the wrong referent
        "wsc", SHARED, "validation", 0,
        "Bernard , who had not told the government official that he was less than 21 when he "
        "filed for a homestead claim, did not consider that he had done anything dishonest. "
        "Still, anyone who knew that he was 19 years old could take his claim away from *him* .",
        "anyone",
    ),
    (  # train keeps correct referents only: idx 0-2 (label 0) are dropped, idx 3 comes first
        "wsc", SHARED, "train", 0,
        "The pony behaved well, sir, and showed no vice; but at last he just threw up his heels "
        "and tipped the young gentleman into the thorn hedge. *He* wanted me to help him out, but "
        "I hope you will excuse me, sir, I did not feel inclined to do so.",
        "young gentleman",
    ),
]


@pytest.mark.parametrize(
    "task, data_dir, split, position, inputs, targets",
    [pytest.param(*case, marks=[needs_shared] if case[1] == SHARED else []) for case in FORMAT_CASES],
    ids=[f"{case[0]}-{case[2]}-{case[3]}" for case in FORMAT_CASES],
)
def test_formats_of_real_examples(task, data_dir, split, position, inputs, targets):
    example = get_task(task).examples(split, data_dir=data_dir, limit=position + 1)[position]
    assert example.inputs == inputs
    assert example.targets == targets


def test_builtin_tasks_table():
    assert set(builtin_task_names()) >= {
        "boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc",
        "sst2", "mrpc", "qqp", "glue_rte", "squad", "mrqa_textbook_qa",
    }
    label_words = {name: get_task(name).label_words for name in builtin_task_names()}
    assert label_words["rte"] == label_words["glue_rte"] == ("entailment", "not_entailment")
    assert label_words["cb"] == ("entailment", "contradiction", "neutral")
    assert label_words["boolq"] == label_words["multirc"] == label_words["wic"] == ("False", "True")
    assert label_words["copa"] == ("choice1", "choice2")
    assert label_words["sst2"] == ("negative", "positive")
    assert label_words["mrpc"] == ("not_equivalent", "equivalent")
    assert label_words["qqp"] == ("not_duplicate", "duplicate")
    free_text = {name for name in builtin_task_names() if get_task(name).free_text}
    assert {"record", "wsc", "squad", "mrqa_drop"} <= free_text
    assert not free_text & {"rte", "cb", "sst2", "multirc"}
    assert get_task("cb").metrics == ("accuracy", "macro_f1")
    assert get_task("mrpc").metrics == get_task("qqp").metrics == ("accuracy", "f1")
    assert get_task("multirc").metrics == ("exact_match", "f1")
    assert get_task("sst2").fields == ("sentence",)
    assert get_task("wsc").fields == ("text", "span2_index", "span2_text")


def test_example_meta_carries_index_and_label():
    example = get_task("cb").examples("validation", data_dir=SHIPPED, limit=1)[0]
    assert isinstance(example, Example)
    assert example.meta == {"idx": 0, "label": 1}


@needs_shared
def test_multirc_is_flattened_per_answer_option():
    examples = get_task("multirc").examples("validation", data_dir=SHARED)
    assert len(examples) == 4848
    assert len({example.meta["group"] for example in examples}) == 953
    assert len({example.meta["idx"]["paragraph"] for example in examples}) == 83
    assert sum(example.targets == "True" for example in examples) == 2075
    assert examples[1].meta == {
        "idx": {"paragraph": 0, "question": 0, "answer": 1}, "label": 1, "group": (0, 0)
    }


@needs_shared
def test_wsc_train_keeps_only_correct_referents():
    wsc = get_task("wsc")
    train = wsc.examples("train", data_dir=SHARED)
    assert len(train) == 259  # of 554 candidates; T5 weighs its WSC train task by 259 too
    assert {example.meta["label"] for example in train} == {1}
    assert len(wsc.examples("validation", data_dir=SHARED)) == 104
    everything = wsc.examples("train", data_dir=SHARED, training=False)
    assert len(everything) == 554


def test_wsc_pronoun_with_attached_punctuation_or_off_index():
    wsc = get_task("wsc")
    # train idx 137: the word at span2_index is 'him,"'
    record = {
        "text": 'The boy continued to whip the pony , and eventually the pony threw him over. '
        'John laughed out quite loud. "Good for him," he said. ',
        "span1_index": 6, "span2_index": 22, "span1_text": "pony", "span2_text": "him",
        "label": 1, "idx": 137,
    }
    [example] = wsc.preprocess(record, training=True)
    assert example.inputs.endswith('quite loud. "Good for *him*," he said. ')
    assert example.inputs.count("*") == 2
    # validation idx 42: span2_index points at "use", the pronoun "it" is the next word
    record = {
        "text": "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the "
        "magic pebble in an iron safe . Some day they might want to use it , but really for now, "
        "what more could they wish for?",
        "span1_index": 22, "span2_index": 30, "span1_text": "safe", "span2_text": "it", "label": 0, "idx": 42,
    }
    assert wsc.input_text(record).endswith(
        "might want to use *it* , but really for now, what more could they wish for?"
    )
    assert wsc.preprocess(record, training=True) == []
    with pytest.raises(TaskDataError, match="span2_text"):
        wsc.input_text(dict(record, span2_text="she"))


def test_record_flattening_and_formats():
    row = {  # the nested SuperGLUE ReCoRD layout
        "idx": 7,
        "passage": {
            "text": "Lyon won the final.\n@highlight\nThe club celebrated\n@highlight\nFans cheered",
            "entities": [{"start": 0, "end": 3}, {"start": 35, "end": 38}, {"start": 0, "end": 3}],
        },
        "qas": [
            {
                "query": "@placeholder lifted the cup.", "idx": 70,
                "answers": [{"text": "Lyon"}, {"text": "club"}],
            }
        ],
    }
    [record] = list(sources.flatten_record(row))
    assert record == {
        "passage": row["passage"]["text"], "query": "@placeholder lifted the cup.",
        "entities": ["Lyon", "club"], "answers": ["Lyon", "club"], "idx": {"passage": 7, "query": 70},
    }
    task = get_task("record")
    expected = (
        "query: @placeholder lifted the cup. entities: Lyon, club passage: Lyon won the final. "
        "The club celebrated. Fans cheered"
    )
    assert [(e.inputs, e.targets) for e in task.preprocess(record, training=True)] == [
        (expected, "Lyon"), (expected, "club")
    ]
    [example] = task.preprocess(record, training=False)
    assert (example.targets, example.meta["answers"]) == ("Lyon", ["Lyon", "club"])


def test_squad_and_mrqa_records():
    squad = get_task("squad")
    record = {
        "id": "q1", "title": "Denver", "context": "The Broncos won Super Bowl 50.",
        "question": "Who won Super Bowl 50?",
        "answers": {"text": ["The Broncos", "Broncos"], "answer_start": [0, 4]},
    }
    [example] = squad.preprocess(record, training=True)
    assert example == Example(
        "question: Who won Super Bowl 50? context: The Broncos won Super Bowl 50.",
        "The Broncos",
        {"idx": "q1", "answers": ["The Broncos", "Broncos"]},
    )
    mrqa = get_task("mrqa_textbook_qa")
    [example] = mrqa.preprocess(dict(record, answers=["Broncos"], qid="x"))
    assert example.targets == "Broncos"
    assert squad.primary_score({"qa_exact_match": 50.0, "qa_f1": 80.0}) == 80.0


# --------------------------------------------------------------------------------- user tasks

TOPICS = REPO / "examples" / "tasks" / "topics.yaml"


def test_user_task_end_to_end():
    task = get_task(str(TOPICS))
    assert isinstance(task, TaskSpec)
    assert (task.name, task.fields) == ("topics", ("headline",))
    assert task.label_words == ("business", "science", "sports")
    assert (task.metrics, task.max_input_tokens, task.max_target_tokens) == (("accuracy", "macro_f1"), 64, 8)
    train, validation = task.examples("train"), task.examples("validation")  # JSONL and CSV
    assert (len(train), len(validation)) == (30, 12)
    assert train[0] == Example(
        "headline: Central bank holds interest rates steady as inflation cools",
        "business",
        {"idx": 0, "label": 0},
    )
    assert validation[2].inputs == "headline: Bank to cut 2,000 jobs in cost-saving plan"
    assert [e.targets for e in validation] == ["business"] * 4 + ["science"] * 4 + ["sports"] * 4
    predictions = [e.targets for e in validation]
    predictions[0], predictions[4] = "sports", "Science"  # one wrong word, one unknown word
    scores = task.score(validation, predictions)
    # business: P 3/3 R 3/4; science: P 3/3 R 3/4; sports: P 4/5 R 4/4 -> F1s 6/7, 6/7, 8/9
    assert scores["accuracy"] == pytest.approx(100 * 10 / 12)
    assert scores["macro_f1"] == pytest.approx(100 * (6 / 7 + 6 / 7 + 8 / 9) / 3)
    assert task.primary_score(scores) == pytest.approx((scores["accuracy"] + scores["macro_f1"]) / 2)
    assert task.input_text({"headline": "Markets rally"}) == "headline: Markets rally"
    with pytest.raises(TaskDataError, match="'headline'"):
        task.validate_record({"title": "Markets rally"})


def _write_task(tmp_path: Path, text: str, rows: list[dict] | None = None) -> Path:
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows or [{"q": "2+2?", "a": "4", "y": "yes"}])
    )
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


def test_user_free_text_task(tmp_path):
    path = _write_task(
        tmp_path,
        "name: arithmetic\ndata: {train: train.jsonl}\ninput_template: 'question: {q}'\n"
        "target_template: '{a}'\nmetric: [qa_exact_match, qa_f1]\n",
        [{"q": "2+2?", "a": "4"}, {"q": "Capital of France?", "a": "Paris"}],
    )
    task = get_task(path)
    assert task.free_text and task.max_target_tokens == 32
    examples = task.examples("train")
    assert [(e.inputs, e.targets) for e in examples] == [
        ("question: 2+2?", "4"), ("question: Capital of France?", "Paris")
    ]
    assert task.score(examples, ["4", "paris."]) == {"qa_exact_match": 100.0, "qa_f1": 100.0}


BASE = "name: t\ndata: {train: train.jsonl}\ninput_template: 'q: {q}'\n"


@pytest.mark.parametrize(
    "text, named",
    [
        (BASE.replace("name: t\n", "") + "label_field: y\nlabel_words: ['no', 'yes']\n", "'name'"),
        (BASE + "label_field: y\nlabel_words: ['no', 'yes']\ncolour: red\n", "'colour'"),
        (BASE + "label_field: y\nlabel_words: ['yes']\n", "'label_words'"),
        (BASE + "label_field: y\nlabel_words: [no, yes]\n", "quote them"),
        (BASE + "label_field: y\n", "'label_words'"),
        (BASE + "label_words: ['no', 'yes']\n", "'label_field'"),
        (BASE + "label_field: y\nlabel_words: ['no', 'yes']\nmetric: bleu\n", "'metric'"),
        (BASE + "label_field: y\nlabel_words: [a, b, c]\nmetric: f1\n", "'metric'"),
        (BASE + "target_template: '{a}'\nmetric: macro_f1\n", "'metric'"),
        (BASE + "label_field: y\nlabel_words: ['no', 'yes']\nmax_input_tokens: -3\n", "'max_input_tokens'"),
        (BASE.replace("train.jsonl}", "missing.jsonl}") + "target_template: '{a}'\n", "'data.train'"),
        (BASE.replace("'q: {q}'", "'q: {q'") + "target_template: '{a}'\n", "'input_template'"),
        (BASE.replace("'q: {q}'", "'q: {q.x}'") + "target_template: '{a}'\n", "'input_template'"),
        (BASE.replace("name: t", "name: rte") + "target_template: '{a}'\n", "built-in"),
        ("- just\n- a list\n", "YAML mapping"),
        ("name: [unclosed\n", "malformed YAML"),
    ],
    ids=lambda value: value if value.isidentifier() or not value.startswith(("name", "data", "-")) else None,
)
def test_user_task_errors_name_the_key(tmp_path, text, named):
    with pytest.raises(TaskDataError, match=named.replace(".", r"\.")) as raised:
        get_task(_write_task(tmp_path, text))
    assert "task.yaml" in str(raised.value)


def test_user_task_bad_label_value_names_field(tmp_path):
    text = BASE + "label_field: y\nlabel_words: ['no', 'yes']\n"
    path = _write_task(tmp_path, text, [{"q": "x", "y": "maybe"}])
    with pytest.raises(TaskDataError, match="t train record 0: field 'y' must be a class index"):
        get_task(path).examples("train")


# ------------------------------------------------------------------------- data and errors


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "rte").mkdir()
    good = json.dumps({"premise": "p", "hypothesis": "h", "label": 0, "idx": 0})
    (tmp_path / "rte" / "validation.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(TaskDataError, match=r"rte/validation\.jsonl:3: malformed JSON"):
        get_task("rte").examples("validation", data_dir=tmp_path)
    (tmp_path / "rte" / "validation.jsonl").write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(TaskDataError, match=r"validation\.jsonl:2: expected a JSON object"):
        get_task("rte").examples("validation", data_dir=tmp_path)


def test_malformed_csv_names_file_and_line(tmp_path):
    (tmp_path / "data.csv").write_text("q,y\nfine,yes\ntoo,many,cells\n")
    with pytest.raises(TaskDataError, match=r"data\.csv:3"):
        list(sources.read_csv(tmp_path / "data.csv"))


def test_missing_or_ill_typed_field_is_named(tmp_path):
    rte = get_task("rte")
    with pytest.raises(TaskDataError, match="missing field.*'hypothesis'"):
        rte.validate_record({"premise": "A cat sat."})
    with pytest.raises(TaskDataError, match="field 'premise' must be a string"):
        rte.validate_record({"premise": 3, "hypothesis": "h"})
    with pytest.raises(TaskDataError, match="field 'span2_index' must be an integer"):
        get_task("wsc").validate_record({"text": "He ran.", "span2_index": "0", "span2_text": "He"})
    (tmp_path / "rte").mkdir()
    unlabelled = {"premise": "p", "hypothesis": "h", "idx": 0}
    (tmp_path / "rte" / "train.jsonl").write_text(json.dumps(unlabelled) + "\n")
    with pytest.raises(TaskDataError, match="rte train record 0: record is missing field 'label'"):
        rte.examples("train", data_dir=tmp_path)


def test_unknown_task_lists_known_names():
    with pytest.raises(UnknownTaskError) as raised:
        get_task("sst-2")
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert message.startswith("unknown task 'sst-2'")
    for name in ("rte", "sst2", "multirc", "squad"):
        assert name in message


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    assert sources.data_dirs() == [sources.SHIPPED_DATA_DIR]
    assert len(get_task("sst2").examples("train")) == 4000  # the shipped subset
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.jsonl").write_text('{"sentence": "fine", "label": 1, "idx": 0}\n')
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
    assert [e.inputs for e in get_task("sst2").examples("train")] == ["sentence: fine"]
    assert len(get_task("sst2").examples("validation")) == 872  # falls back to the shipped data
    with pytest.raises(FileNotFoundError, match="SOFTPROMPT_DATA_DIR"):
        get_task("qqp").examples("train")


def test_split_slices_name_consecutive_records_of_a_file():
    task = get_task("sst2")
    validation = [e.inputs for e in task.examples("validation")]
    assert [e.inputs for e in task.examples("validation[500:]")] == validation[500:]    # 372 sentences
    assert [e.inputs for e in task.examples("validation[:10%]")] == validation[:87]     # 87.2, rounded
    assert [e.inputs for e in task.examples("validation[-5:]")] == validation[-5:]
    assert [e.inputs for e in task.examples("validation[300:500]", limit=3)] == validation[300:303]
    assert task.examples("validation[5:3]") == []
    assert len(task.examples("train[:100]")) == 100
    assert task.examples("train[:1]")[0].targets in ("negative", "positive")
    with pytest.raises(TaskDataError, match=r"'validation\[5\]' is not NAME or NAME\[START:STOP\]"):
        task.examples("validation[5]")
    with pytest.raises(FileNotFoundError, match="no 'valid' data"):
        task.examples("valid[:5]")


def test_split_slices_of_a_user_tasks_csv_file():
    task = get_task(str(TOPICS))   # validation: a CSV file of 12 rows
    validation = [e.inputs for e in task.examples("validation")]
    assert [e.inputs for e in task.examples("validation[9:]")] == validation[9:] and len(validation) == 12
    with pytest.raises(TaskDataError, match="no 'test' split"):
        task.examples("test[:5]")


def test_slice_overlap_is_decided_on_record_positions():
    from softprompt.core.tasks.slices import overlap

    def length(name):
        assert name == "validation"
        return 872

    assert not overlap("validation[500:]", "validation", length=length, second_limit=500)
    assert overlap("validation[500:]", "validation", length=length)                 # the whole split meets it
    assert overlap("validation[499:]", "validation[:500]", length=length)
    assert not overlap("validation[-372:]", "validation[:500]", length=length)      # 872 - 372 = 500
    assert overlap("validation[-373:]", "validation[:500]", length=length)
    assert not overlap("train", "validation", length=length)
    assert overlap("validation", "validation", length=length, second_limit=1)


@needs_shared
def test_shipped_data_is_a_verbatim_copy():
    verbatim = ["rte/train.jsonl", "rte/validation.jsonl", "cb/train.jsonl", "cb/validation.jsonl"]
    for path in verbatim + ["sst2/validation.jsonl"]:
        assert filecmp.cmp(SHIPPED / path, SHARED / path, shallow=False), path
    with open(SHARED / "sst2" / "train.jsonl", "rb") as full:
        first_4000 = b"".join(next(full) for _ in range(4000))
    assert (SHIPPED / "sst2" / "train.jsonl").read_bytes() == first_4000


# ---------------------------------------------------------------------------------------- TFDS


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None, reason="TFDS is installed")
def test_tfds_source_without_tfds_says_how_to_install():
    with pytest.raises(ImportError, match=r"softprompt\[tfds\]"):
        get_task("rte", source="tfds").examples("validation")


def test_tfds_source_reads_a_tiny_builder(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    import numpy as np

    rows = [("A dog barks.", "An animal makes a sound.", 0), ("It is sunny.", "It is raining.", 1)]

    class SoftpromptTinyRte(tfds.core.GeneratorBasedBuilder):
        """Two RTE-like examples with TFDS's super_glue/rte features."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "premise": tfds.features.Text(),
                    "hypothesis": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["entailment", "not_entailment"]),
                    "idx": tfds.features.Scalar(dtype=np.int32),
                }),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"validation": self._generate_examples()}

        def _generate_examples(self):
            for idx, (premise, hypothesis, label) in enumerate(rows):
                yield idx, {"premise": premise, "hypothesis": hypothesis, "label": label, "idx": idx}

    SoftpromptTinyRte(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    task = dataclasses.replace(get_task("rte"), source=sources.TfdsSource("softprompt_tiny_rte"))
    examples = task.examples("validation", data_dir=tmp_path)  # TFDS may shuffle: sort by idx
    assert sorted(((e.inputs, e.targets, e.meta) for e in examples), key=lambda t: t[2]["idx"]) == [
        ("hypothesis: An animal makes a sound. premise: A dog barks.", "entailment", {"idx": 0, "label": 0}),
        ("hypothesis: It is raining. premise: It is sunny.", "not_entailment", {"idx": 1, "label": 1}),
    ]
