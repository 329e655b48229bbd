"""Files and folders replaced as one.

A file (`write_file`): written under a temporary name beside it, then renamed onto it, so readers —
concurrent builders of the same model cache included — see the old file or the whole new one.

A folder (a checkpoint, a prompt artifact: two files that must agree):

A new version is written complete into `<name>.staging` beside the target, then swapped in with
two renames (target -> `<name>.retired`, staging -> target). A crash at any instant leaves a
complete version: the target, or, between the two renames, the retired and the staged folders —
`recover_folder` puts the newer one back before anything reads the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(temporary path)`, then rename onto `path`; a failed write leaves nothing behind."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def staging_folder(target: str | os.PathLike) -> Path:
    """An empty folder to write the next version of `target` into."""
    target = Path(target)
    recover_folder(target)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def replace_folder(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Swaps the complete `staging` folder in as `target`."""
    staging, target = Path(staging), Path(target)
    retired = target.with_name(target.name + ".retired")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def recover_folder(target: str | os.PathLike) -> bool:
    """After a crash between the two renames of `replace_folder`, moves the newest complete version
    back to `target`; returns whether `target` exists."""
    target = Path(target)
    if target.exists():
        return True
    retired = target.with_name(target.name + ".retired")
    staging = target.with_name(target.name + ".staging")
    if retired.exists() and staging.exists():     # the new version was complete before the first rename
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    elif retired.exists():
        os.replace(retired, target)
    return target.exists()
