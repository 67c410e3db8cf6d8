"""Write a folder atomically: build it in a temporary sibling, then swap it into place.

Used for bundles and random checkpoints alike, so a failed or interrupted run never leaves a
half-written folder behind, and an old folder is replaced only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def check_out(out: Path, force: bool) -> None:
    """Refuse to replace a file, or a non-empty folder without `force` (FileExistsError with the fix)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another output folder")
    if any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")


@contextmanager
def staged_folder(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to `out`; when the block succeeds it becomes `out`."""
    out = Path(out)
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the result should look like any other folder
    try:
        yield tmp
        check_out(out, force)  # again: something may have appeared meanwhile
        if out.exists():  # empty, or --force: swap the old folder out, the new one in
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(old / out.name, out)  # put the previous folder back
                raise
            finally:
                shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
