"""`fixed.init_from`: every trial of a campaign starts from one registered prompt (SPoT-style
transfer) or prompt folder. The driver resolves it once at launch (launch.py): the prompt is copied
into the campaign folder and the trials read plain `init: from_file` + `init_path`, so trials,
`campaign.json` and resume never touch the registry for it.

    >>> init_from_problem({"init_from": "rte-ensemble@production#1"}, init_searched=False) is None
    True
    >>> init_from_problem({"init_from": "rte-ensemble", "init": "class_labels"}, init_searched=False)
    ('fixed.init', 'fixed.init_from sets the init (from_file, its prompt): remove fixed.init')
"""

from __future__ import annotations

import os
from typing import Any, Mapping

INIT_FROM = "init_from"
INIT_FOLDER = "init_prompt"   # inside the campaign folder: the prompt every trial starts from


def init_from_problem(fixed: Mapping[str, Any], *, init_searched: bool) -> tuple[str, str] | None:
    """(field, message) of what is wrong with `fixed.init_from`, or None: it must be a prompt folder
    or `NAME[@ALIAS|:VERSION][#K]`, and no other setting may choose the init."""
    from softprompt.store.transfer import parse_member_reference

    value, field = fixed[INIT_FROM], f"fixed.{INIT_FROM}"
    if not isinstance(value, str) or not value.strip():
        return field, "a registered ensemble (NAME@ALIAS, NAME@ALIAS#K) or a prompt folder"
    if not os.path.isdir(value):
        try:
            parse_member_reference(value)
        except ValueError as error:
            return field, str(error)
    clashes = (["overrides.init"] if init_searched else []) + (
        ["fixed.init"] if fixed.get("init", "from_file") != "from_file" else []) + (
        ["fixed.init_path"] if "init_path" in fixed else [])
    if clashes:
        return clashes[0], f"{field} sets the init (from_file, its prompt): remove {clashes[0]}"
    return None


def with_init_prompt(fixed: Mapping[str, Any], folder: str | os.PathLike) -> dict[str, Any]:
    """`fixed` with `init_from` replaced by what the trials read: `init: from_file`, `init_path: folder`."""
    kept = {key: value for key, value in fixed.items() if key not in (INIT_FROM, "init", "init_path")}
    return kept | {"init": "from_file", "init_path": str(folder)}
