"""Support tickets: free text whose category can be derived, one NDJSON file a day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loopline.simulate import model as m
from loopline.simulate.state import SimState
from loopline.simulate.writers.common import atomic_write, user_emails

TICKET_DEFECTS = ("orphan_requester",)


def _iso(epoch: np.ndarray) -> np.ndarray:
    return pd.to_datetime(epoch, unit="s").strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()


def write_tickets(state: SimState, landing: Path, day: int, tickets: pd.DataFrame) -> pd.DataFrame:
    """Write one day of support tickets (free text) as NDJSON; return injected defects."""
    cfg = state.config
    d = cfg.date_of(day)
    path = landing / "tickets" / f"tickets_{d:%Y%m%d}.ndjson"
    idx = tickets["user_idx"].to_numpy()
    r = np.random.default_rng([cfg.seed, day + 10_000, 8])
    orphan = r.random(len(tickets)) < cfg.defect_rate * 5
    email = user_emails(state, idx)
    shows = state.shows["title"].to_numpy()
    rows = []
    for i, t in enumerate(tickets.itertuples(index=False)):
        category = m.TICKET_CATEGORIES[t.category]
        template = m.TICKET_TEMPLATES[category][t.template]
        core = template.format(
            plan=m.PLANS[int(state.users["plan_id"][t.user_idx]) - 1][1],
            amount=f"{9 + t.template}.99",
            device=m.DEVICES[int(state.users["device"][t.user_idx])],
            show=shows[(t.ticket_key % len(shows))],
            genre=m.GENRES[t.ticket_key % len(m.GENRES)],
        )
        body = " ".join(
            x for x in (m.TICKET_OPENERS[t.opener], core, m.TICKET_CLOSERS[t.closer]) if x
        )
        rows.append(
            {
                "ticket_id": f"tk_{t.ticket_key:016x}",
                "requester_email": f"someone{i}@unknown.example" if orphan[i] else email[i],
                "created_at": _iso(np.array([t.created_at]))[0],
                "channel": ("email", "chat")[t.channel],
                "subject": " ".join(core.split()[:6]).rstrip(".,?!"),
                "body": body,
            }
        )
    frame = pd.DataFrame(
        rows, columns=["ticket_id", "requester_email", "created_at", "channel", "subject", "body"]
    )
    atomic_write(path, frame.to_json(orient="records", lines=True).encode() if len(frame) else b"")
    return pd.DataFrame(
        {
            "source": "tickets",
            "kind": "orphan_requester",
            "record_id": frame["ticket_id"].to_numpy()[orphan],
            "file": str(path.relative_to(landing)),
        }
    )
