"""Payments: the billing vendor's daily CSV export (minor units, several currencies, a date
format that changes twice, failures, refunds, an unreadable partial upload now and then)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loopline.simulate import model as m
from loopline.simulate.state import SimState
from loopline.simulate.writers.common import atomic_write, user_emails

PAYMENT_DEFECTS = ("duplicate", "null_amount", "unparseable_date", "orphan_customer")
PAYMENT_FORMATS = (  # the vendor changed its export format twice
    (0, "%d.%m.%Y %H:%M:%S"),
    (30, "%Y-%m-%dT%H:%M:%SZ"),
    (75, "%m/%d/%Y %I:%M:%S %p"),
)
CORRUPT_EVERY_DAYS = 45  # a partial upload the loader cannot parse at all


def payment_format(day: int) -> str:
    fmt = PAYMENT_FORMATS[0][1]
    for first_day, candidate in PAYMENT_FORMATS:
        if day >= first_day:
            fmt = candidate
    return fmt


def write_payments(
    state: SimState, landing: Path, day: int, pay: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """Write the vendor's CSV export of one day; return its injected defects and rows written."""
    cfg = state.config
    d = cfg.date_of(day)
    path = landing / "payments" / f"payments_{d:%Y%m%d}.csv"
    u = state.users
    idx = pay["user_idx"].to_numpy()
    r = np.random.default_rng([cfg.seed, day + 10_000, 7])
    k = len(pay)
    draw = r.random(k)
    aux = r.random(k)
    p = cfg.defect_rate * 2 / len(PAYMENT_DEFECTS)  # payments are few: defects a little likelier
    kind = np.where(
        draw < p * len(PAYMENT_DEFECTS),
        1 + np.minimum((draw / p).astype(np.int64), len(PAYMENT_DEFECTS) - 1),
        0,
    )
    currency = np.array([m.CURRENCY[c] for c in m.COUNTRIES])[u["country"][idx]]
    email = user_emails(state, idx)
    quirk = aux < 0.15  # the vendor upper-cases some addresses and pads others
    email = np.where(quirk, np.char.upper(email.astype(str)), email)
    email = np.where((aux > 0.95), np.char.add(email.astype(str), " "), email)
    created = (
        pd.to_datetime(pay["created_at"].to_numpy(), unit="s")
        .strftime(payment_format(day))
        .to_numpy()
    )
    frame = pd.DataFrame(
        {
            "payment_id": [f"py_{key:016x}" for key in pay["payment_key"].to_numpy()],
            "customer_ref": [
                f"cus_{(int(uid) * 2654435761) % 2**32:08x}" for uid in u["user_id"][idx]
            ],
            "customer_email": email,
            "type": pay["type"].to_numpy(),
            "status": pay["status"].to_numpy(),
            "amount_minor": pd.array(pay["amount_minor"].to_numpy(), dtype="Int64"),
            "currency": currency,
            "created": created,
            "failure_reason": pay["failure_reason"].to_numpy(),
        }
    )
    names = np.array(("", *PAYMENT_DEFECTS))[kind]
    frame.loc[names == "null_amount", "amount_minor"] = pd.NA
    frame.loc[names == "unparseable_date", "created"] = np.where(
        aux[names == "unparseable_date"] < 0.5, "31/02/2026 99:99", "N/A"
    )
    orphan = names == "orphan_customer"
    frame.loc[orphan, "customer_email"] = [
        f"ghost{i}@unknown.example" for i in np.flatnonzero(orphan)
    ]
    frame.loc[orphan, "customer_ref"] = [f"cus_ghost{i:04d}" for i in np.flatnonzero(orphan)]
    dup = names == "duplicate"
    out = pd.concat([frame, frame[dup]], ignore_index=True)  # the vendor re-sent these rows
    atomic_write(path, out.to_csv(index=False, lineterminator="\n").encode())
    defects = pd.DataFrame(
        {
            "source": "payments",
            "kind": names[kind > 0],
            "record_id": frame["payment_id"].to_numpy()[kind > 0],
            "file": str(path.relative_to(landing)),
        }
    )
    if day % CORRUPT_EVERY_DAYS == CORRUPT_EVERY_DAYS - 1:
        bad = path.with_name(f"payments_{d:%Y%m%d}_part2.csv")
        atomic_write(bad, np.random.default_rng([cfg.seed, day, 99]).bytes(2048))
        defects = pd.concat(
            [
                defects,
                pd.DataFrame(
                    {
                        "source": ["payments"],
                        "kind": ["unreadable_file"],
                        "record_id": [bad.name],
                        "file": [str(bad.relative_to(landing))],
                    }
                ),
            ],
            ignore_index=True,
        )
    return defects, len(out)
