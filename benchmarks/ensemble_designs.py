"""Which members should a small ensemble vote with? Reads a finished campaign's prompts (e.g.
`examples/campaigns/demo-members.yaml`: three inits x three seeds), scores every prompt once on a
selection split and on a report split, and compares ensemble designs over the same prompts:

- `same init`: the three seeds of one init (today's demo: class labels), one realisation per init;
- `mixed inits`: one prompt of each init with the same seed, one realisation per seed.

For each realisation: the prompt the selection split ranks first, the greedy ensemble (forward
selection with replacement on the selection split, majority vote; soft vote as a second row), the
plain vote of all three, and the best member on the report split. Printed: each row's report
accuracy per realisation, and the mean gaps "ensemble minus its best member".

    .venv/bin/python benchmarks/ensemble_designs.py --experiment demo-members \
        --tracking-uri sqlite:///runs/mlflow.db [--selection 'validation[300:500]'] [--report 'validation[500:]']
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def scores_on(model, task, candidates, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate's label log-likelihoods on `split`: ([K, B, C], gold [B])."""
    from softprompt.core.evaluation import encode_inputs
    from softprompt.core.inference import label_targets
    from softprompt.core.multi_prompt import stack_prompts
    from softprompt.ensemble.predict import EnsembleInput, member_scores

    examples = task.examples(split, training=False)
    targets = tuple(map(tuple, label_targets(model, task.label_words)))
    count = len(candidates)
    inputs = [EnsembleInput(ids, 0, (1,) * count, targets, task.label_words, "majority")
              for ids in encode_inputs(model, task, examples)]
    scores, _ = member_scores(model, stack_prompts([c.prompt.embeddings for c in candidates]), inputs)
    gold = np.array([task.label_words.index(e.targets) for e in examples])
    return np.stack(scores, axis=1), gold


def accuracy(scores: np.ndarray, gold: np.ndarray, weights, rule: str) -> float:
    from softprompt.ensemble.voting import combine

    return 100.0 * float(np.mean(combine(scores, weights=weights, rule=rule)[0] == gold))


def greedy(scores: np.ndarray, gold: np.ndarray, rule: str, size: int) -> np.ndarray:
    """Greedy selection's [K] votes on the selection split, with the build's tie-break."""
    from softprompt.ensemble.selection import greedy_select
    from softprompt.ensemble.voting import combine, label_probabilities

    gold_probability = label_probabilities(scores)[:, np.arange(len(gold)), gold]          # [K, B]
    chosen = greedy_select(lambda w: combine(scores, weights=w, rule=rule)[0],
                           lambda predicted: float(np.mean(predicted == gold)), candidates=len(scores), size=size,
                           tiebreak=lambda w: float(np.mean(np.log(np.maximum(w @ gold_probability / w.sum(), 1e-12)))))
    return np.array(chosen.multiplicities)


def design_rows(selection, report, members: list[int]) -> dict[str, float]:
    """Report accuracies of one realisation (candidate indices `members`)."""
    (sel, sel_gold), (rep, rep_gold) = selection, report
    sel, rep = sel[members], rep[members]
    singles_sel = [accuracy(sel[[k]], sel_gold, None, "majority") for k in range(len(members))]
    singles_rep = [accuracy(rep[[k]], rep_gold, None, "majority") for k in range(len(members))]
    rows = {"best member (report)": max(singles_rep),
            "member picked on selection": singles_rep[int(np.argmax(singles_sel))],
            "vote of all (majority)": accuracy(rep, rep_gold, None, "majority"),
            "vote of all (soft)": accuracy(rep, rep_gold, None, "soft")}
    for rule in ("majority", "soft"):
        votes = greedy(sel, sel_gold, rule, size=len(members))
        rows[f"greedy ({rule})"] = accuracy(rep, rep_gold, votes, rule)
        rows[f"greedy ({rule}) votes"] = votes.tolist()
    rows["members on report"] = singles_rep
    rows["mean pairwise disagreement (report)"] = float(np.mean([
        np.mean(rep[i].argmax(-1) != rep[j].argmax(-1)) for i in range(len(members)) for j in range(i + 1, len(members))]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--selection", default="validation[300:500]")
    parser.add_argument("--report", default="validation[500:]")
    args = parser.parse_args()

    from softprompt.core.tasks import get_task
    from softprompt.ensemble.build import candidate_model, eligible_runs, fetch_candidates
    from softprompt.store import Store

    store = Store(args.tracking_uri)
    runs = eligible_runs(store, task=args.task, metric="accuracy", experiments=[args.experiment])
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as folder:
        candidates = fetch_candidates(store, runs, "accuracy", Path(folder))
        model = candidate_model(runs, None)
        selection = scores_on(model, task, candidates, args.selection)
        report = scores_on(model, task, candidates, args.report)
    index = {(c.run.params["init"], int(c.run.params["seed"])): k for k, c in enumerate(candidates)}
    inits = sorted({init for init, _ in index})
    seeds = sorted({seed for _, seed in index})
    realisations = {f"same init: {init}": [index[(init, s)] for s in seeds] for init in inits}
    realisations |= {f"mixed inits: seed {s}": [index[(init, s)] for init in inits] for s in seeds}
    results = {name: design_rows(selection, report, members) for name, members in realisations.items()}
    print(json.dumps({"selection": args.selection, "report": args.report, "report_examples": int(len(report[1])),
                      "order": {name: [list(candidates[k].run.params[p] for p in ("init", "seed")) for k in members]
                                for name, members in realisations.items()},
                      "results": results}, indent=1))
    gaps = defaultdict(list)
    for name, rows in results.items():
        design = name.split(":")[0]
        for row in ("greedy (majority)", "greedy (soft)", "vote of all (majority)", "vote of all (soft)",
                    "member picked on selection"):
            gaps[(design, row)].append(rows[row] - rows["best member (report)"])
    print(f"\nminus the best member on {args.report} (mean over realisations, and each):")
    for (design, row), values in gaps.items():
        print(f"  {design:12s} {row:28s} {np.mean(values):+6.2f}  {' '.join(f'{v:+.2f}' for v in values)}")


if __name__ == "__main__":
    main()
