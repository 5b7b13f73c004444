"""State files that another process reads while they are written (the node's supervisor,
`make cluster-down`, the image registry): written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, value: Any) -> None:
    """`value` as JSON at `path`, replaced in one rename: a reader sees the old file or the
    new one, never half of one (a crash mid-write leaves the old)."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False,
                                     prefix=f".{path.name}.", suffix=".new") as staged:
        try:
            json.dump(value, staged, indent=2)
        except BaseException:
            os.unlink(staged.name)
            raise
    os.replace(staged.name, path)
