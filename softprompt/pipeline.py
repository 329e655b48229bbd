"""The one path from a campaign to registered ensembles: the campaign's trials, then, once it has
ended, one ensemble per task built as its `ensemble:` section says (guarded when it asks) and
recorded in the campaign folder so that a resumed or re-read campaign never builds twice.
`softprompt search launch | resume | extend` and the demo all go through here; it lives in the
shell because it joins `search/` and `ensemble/`, which never import each other."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def build_summary(registered, alias: str | None) -> dict:
    """A registered version as printed and recorded: its members with their votes, the selection."""
    manifest = registered.manifest
    selection = {key: value for key, value in (manifest.selection or {}).items() if key != "candidates"}
    return {"name": registered.name, "version": registered.version, "alias": alias, "task": manifest.task,
            "metric": manifest.metric, "model_fingerprint": manifest.model_fingerprint, "vote": manifest.vote_rule,
            "selection": selection, **({"pool": manifest.pool} if manifest.pool else {}),
            "members": [{"run_id": m.run_id, manifest.metric: m.metric, "votes": m.multiplicity}
                        for m in manifest.members]}


def promote(store, registered, *, alias: str, max_p: float, selection_split: str | None = None,
            selection_examples: int | None = None, data_dir: str | None = None,
            say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict:
    """The guarded promotion of a just-built version (`ensemble.promote`): `say`s one line on what
    happened and why; returns the figures."""
    from softprompt.ensemble.build import SelectionSplit
    from softprompt.ensemble.promote import promote_if_better

    split = SelectionSplit(selection_split, None, data_dir) if selection_split else None
    promotion = promote_if_better(store, registered, alias=alias, max_p=max_p, split=split, limit=selection_examples,
                                  data_dir=data_dir)
    say(promotion.line())
    return promotion.as_dict()


def build_campaign_ensembles(campaign, tracking_uri: str) -> list[dict]:
    """One ensemble per task of an ended campaign, as its `ensemble:` section says (none without
    one): named `<task>-ensemble` unless the section names it, `production` moved (only if better
    when `promote_if_better`)."""
    if campaign.ensemble is None:
        return []
    from softprompt.ensemble.build import build_ensemble
    from softprompt.store import Store

    store, settings, built = Store(tracking_uri), campaign.ensemble, []
    for task in campaign.tasks:
        guarded = settings.promote_if_better
        registered = build_ensemble(store, task=task, top=settings.top, experiments=[campaign.name],
                                    name=settings.name or f"{Path(task).stem}-ensemble", select=settings.select,
                                    vote_rule=settings.vote, selection_split=settings.selection_split,
                                    allow_fewer=True, alias=None if guarded else "production")
        if not guarded:
            built.append(build_summary(registered, "production"))
            continue
        promotion = promote(store, registered, alias="production", max_p=settings.promote_max_p,
                            selection_split=settings.selection_split)
        built.append(build_summary(registered, "production" if promotion["promoted"] else None)
                     | {"promotion": promotion})
    return built


def campaign_ensembles(campaign, result, *, rebuild: bool = False) -> list[dict]:
    """The ensembles of an ended campaign: those its folder records, else (or with `rebuild`, after
    an extension) built now and recorded. None while trials remain or when every trial failed."""
    from softprompt.search import launch as launching

    if not result.finished or result.all_failed:
        return []
    if result.ensembles and not rebuild:
        return list(result.ensembles)
    ensembles = build_campaign_ensembles(campaign, result.tracking_uri)
    if ensembles:
        launching.record_ensembles(result.experiment_dir, ensembles)
    return ensembles


def run_campaign(campaign):
    """Runs `campaign` to its end and builds its ensembles: `(CampaignResult, [ensemble summaries])`."""
    from softprompt.search.launch import launch

    result = launch(campaign)
    return result, campaign_ensembles(campaign, result)
