"""Which members should a small ensemble vote with? Reads a finished campaign's prompts (e.g.
`examples/campaigns/demo-members.yaml`: three inits x three seeds), scores every prompt once on a
selection split and on a report split, and compares ensemble designs over the same prompts:

- `same init`: the three seeds of one init (the demo's runs A-C: class labels), one realisation per init;
- `mixed inits`: one prompt of each init with the same seed (today's demo), one realisation per seed;
- `all trials`: every trial's prompt as a candidate (one realisation: what a larger campaign offers);
- with `--snapshots CAMPAIGN_FOLDER`, the same two designs with every evaluated checkpoint of each
  trial as a candidate (steps 150 and 300 in the demo's trial: a snapshot ensemble), read from
  the trials' Ray Tune checkpoints.

For each realisation: the prompt the selection split ranks first, the greedy ensemble (forward
selection with replacement on the selection split, majority vote; soft vote as a second row), the
plain vote of all three, the learned vote (`ensemble/stacking.py`: member weights and a label bias
fitted on the selection split) over greedy's members and over all of the realisation's prompts, the
first-ranked prompt with its own weight and bias fitted the same way (calibrated), and the best
member on the report split. Printed: each row's report
accuracy per realisation, and the mean gaps "ensemble minus its best member".

    .venv/bin/python benchmarks/ensemble_designs.py --experiment demo-members \
        --tracking-uri sqlite:///runs/mlflow.db [--selection 'validation[300:500]'] [--report 'validation[500:]'] \
        [--snapshots runs/demo-members] [--where decay_factor=0.5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def scores_on(model, task, prompts, split: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Every prompt's ([P, E] each) label log-likelihoods on `split`: ([K, B, C], gold [B], the
    B examples)."""
    from softprompt.ensemble.scores import MemberScores

    examples = task.examples(split, training=False)
    scores = MemberScores.compute(model, task, prompts, examples, metric="accuracy")
    return scores.labels, scores.gold(), examples


def accuracy(scores: np.ndarray, gold: np.ndarray, weights, rule: str) -> float:
    from softprompt.ensemble.voting import combine

    return 100.0 * float(np.mean(combine(scores, weights=weights, rule=rule)[0] == gold))


def greedy(scores: np.ndarray, gold: np.ndarray, examples: list, task, rule: str, size: int) -> np.ndarray:
    """Greedy selection's [K] votes on the selection split, with the build's tie-break."""
    from softprompt.ensemble.scores import MemberScores
    from softprompt.ensemble.selection import greedy_select
    from softprompt.ensemble.voting import combine

    chosen = greedy_select(lambda w: combine(scores, weights=w, rule=rule)[0],
                           lambda predicted: float(np.mean(predicted == gold)), candidates=len(scores), size=size,
                           tiebreak=MemberScores(task, examples, "accuracy", labels=scores).gold_log_probability())
    return np.array(chosen.multiplicities)


def design_rows(task, selection, report, members: list[int], size: int) -> dict[str, float]:
    """Report accuracies of one realisation (candidate indices `members`); greedy ensembles of at
    most `size` votes."""
    from softprompt.ensemble.selection import pairwise_disagreement
    from softprompt.ensemble.stacking import fit_pool, pool_logits

    (sel, sel_gold, sel_examples), (rep, rep_gold, _) = selection, report
    sel, rep = sel[members], rep[members]
    singles_sel = [accuracy(sel[[k]], sel_gold, None, "majority") for k in range(len(members))]
    singles_rep = [accuracy(rep[[k]], rep_gold, None, "majority") for k in range(len(members))]
    rows = {"best member (report)": max(singles_rep),
            "member picked on selection": singles_rep[int(np.argmax(singles_sel))],
            "vote of all (majority)": accuracy(rep, rep_gold, None, "majority"),
            "vote of all (soft)": accuracy(rep, rep_gold, None, "soft")}
    for rule in ("majority", "soft"):
        votes = greedy(sel, sel_gold, sel_examples, task, rule, size=size)
        rows[f"greedy ({rule})"] = accuracy(rep, rep_gold, votes, rule)
        rows[f"greedy ({rule}) votes"] = votes.tolist()
    picked = int(np.argmax(singles_sel))
    chosen = [k for k, count in enumerate(rows["greedy (majority) votes"]) if count]
    for name, subset in (("learned (all)", list(range(len(members)))), ("learned (greedy members)", chosen),
                         ("member picked on selection, calibrated", [picked])):
        pool = fit_pool(sel[subset], sel_gold)
        rows[name] = 100.0 * float(np.mean(pool_logits(rep[subset], pool).argmax(-1) == rep_gold))
        rows[f"{name} pool"] = pool.describe()
    rows["members on report"] = singles_rep
    rows["mean pairwise disagreement (report)"] = pairwise_disagreement(list(rep.argmax(-1)))
    return rows


def trial_snapshots(folder: Path, wanted: dict[str, str]) -> dict[tuple[str, int, int], np.ndarray]:
    """(init, seed, step) -> the prompt [P, E] of every Ray Tune checkpoint of the campaign's trials
    whose config matches `wanted` (param name -> its value as MLflow records it)."""
    from safetensors.numpy import load_file

    found = {}
    for state in sorted(folder.glob("*/checkpoint_*/state.json")):
        values = json.loads(state.read_text())
        config = values["config"]
        if any(str(config.get(name)) != value for name, value in wanted.items()):
            continue
        found[(config["init"], int(config["seed"]), int(values["step"]))] = \
            load_file(str(state.parent / "arrays.safetensors"))["prompt"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--selection", default="validation[300:500]")
    parser.add_argument("--report", default="validation[500:]")
    parser.add_argument("--size", type=int, default=3, help="the most votes of a greedy ensemble (the demo's: 3)")
    parser.add_argument("--snapshots", help="the campaign's folder: every trial checkpoint's prompt as a candidate")
    parser.add_argument("--where", action="append", default=[], metavar="PARAM=VALUE",
                        help="only the trials whose MLflow param PARAM reads VALUE (repeatable), e.g. "
                             "decay_factor=0.5 in demo-decay.yaml")
    args = parser.parse_args()
    wanted = dict(condition.split("=", 1) for condition in args.where)

    from softprompt.core.tasks import get_task
    from softprompt.ensemble.build import candidate_model, eligible_runs, fetch_candidates
    from softprompt.store import Store

    store = Store(args.tracking_uri)
    runs = [run for run in eligible_runs(store, task=args.task, metric="accuracy", experiments=[args.experiment])
            if all(run.params.get(name) == value for name, value in wanted.items())]
    if not runs:
        raise SystemExit(f"no finished trial of {args.experiment} matches {wanted}")
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as folder:
        candidates = fetch_candidates(store, runs, "accuracy", Path(folder))
        model = candidate_model(runs, None)
        prompts = [np.asarray(c.prompt.embeddings) for c in candidates]
    keys = [(c.run.params["init"], int(c.run.params["seed"]), "best") for c in candidates]
    index = {key: k for k, key in enumerate(keys)}
    if len(index) < len(keys):
        raise SystemExit("several trials share an (init, seed): pick one configuration with --where")
    inits = sorted({init for init, _, _ in keys})
    seeds = sorted({seed for _, seed, _ in keys})
    designs = {f"same init: {init}": [(init, s, "best") for s in seeds] for init in inits}
    designs |= {f"mixed inits: seed {s}": [(init, s, "best") for init in inits] for s in seeds}
    designs["all trials"] = [key for key in keys if key[2] == "best"]     # a campaign's whole pool
    if args.snapshots:
        snapshots = trial_snapshots(Path(args.snapshots), wanted)
        for key, embeddings in snapshots.items():
            index[key] = len(prompts)
            keys.append(key)
            prompts.append(embeddings)
        steps = sorted({step for _, _, step in snapshots})
        designs |= {f"same init, snapshots: {init}": [(init, s, step) for s in seeds for step in steps]
                    for init in inits}
        designs |= {f"mixed inits, snapshots: seed {s}": [(init, s, step) for init in inits for step in steps]
                    for s in seeds}
    # a campaign still running: only the realisations whose trials have all finished
    realisations = {name: [index[key] for key in members] for name, members in designs.items()
                    if all(key in index for key in members)}
    selection = scores_on(model, task, prompts, args.selection)
    report = scores_on(model, task, prompts, args.report)
    results = {name: design_rows(task, selection, report, members, args.size) for name, members in realisations.items()}
    print(json.dumps({"selection": args.selection, "report": args.report, "report_examples": int(len(report[1])),
                      "order": {name: [keys[k] for k in members] for name, members in realisations.items()},
                      "results": results}, indent=1))
    gaps = defaultdict(list)
    for name, rows in results.items():
        design = name.split(":")[0]
        for row in ("greedy (majority)", "greedy (soft)", "vote of all (majority)", "vote of all (soft)",
                    "member picked on selection", "learned (all)", "learned (greedy members)",
                    "member picked on selection, calibrated"):
            gaps[(design, row)].append(rows[row] - rows["best member (report)"])
    print(f"\nminus the best member on {args.report} (mean over realisations, and each):")
    for (design, row), values in gaps.items():
        print(f"  {design:22s} {row:28s} {np.mean(values):+6.2f}  {' '.join(f'{v:+.2f}' for v in values)}")
    print(f"\neach trial's prompt on {args.report} (mean ± std, lowest):")
    for init in inits:
        singles = [accuracy(report[0][[index[(init, s, "best")]]], report[1], None, "majority")
                   for s in seeds if (init, s, "best") in index]
        print(f"  {init:22s} {np.mean(singles):6.2f} ± {np.std(singles, ddof=1) if len(singles) > 1 else 0:4.2f}"
              f"  {min(singles):6.2f}  ({' '.join(f'{v:.1f}' for v in singles)})")


if __name__ == "__main__":
    main()
