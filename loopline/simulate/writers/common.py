"""What every source system's writer shares: atomic files, and the users' e-mail addresses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from loopline.simulate.state import SimState

FIRST_NAMES = ("ava", "ben", "chloe", "dev", "elif", "farah", "gus", "hana", "ivo", "jun", "kofi",
               "lena", "mateo", "nia", "omar", "priya", "quinn", "rosa", "sven", "tara", "uma", "vik",
               "wen", "yara")  # fmt: skip
LAST_NAMES = ("adams", "berg", "costa", "dubois", "eze", "fischer", "garcia", "haddad", "ito",
              "jensen", "khan", "lopez", "moreau", "novak", "okafor", "park", "rossi", "silva",
              "tanaka", "weber")  # fmt: skip
DOMAINS = ("example.com", "mail.example.org", "inbox.example.net", "example.co.uk")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def user_emails(state: SimState, idx: np.ndarray) -> np.ndarray:
    """The e-mail address of each user in `idx` (the key the billing and support systems use)."""
    u = state.users
    return np.array(
        [
            f"{FIRST_NAMES[u['first_name'][i] % len(FIRST_NAMES)]}.{LAST_NAMES[u['last_name'][i] % len(LAST_NAMES)]}"
            f"{u['user_id'][i]}@{DOMAINS[u['user_id'][i] % len(DOMAINS)]}"
            for i in idx
        ],
        dtype=object,
    )
