"""How paths are shown to a person: relative to the working folder when they lie under it."""

from __future__ import annotations

from pathlib import Path


def shown(path: Path | str) -> str:
    """`path` relative to the current folder (the repo root, usually), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
