"""The OLTP database: users, plans, prices and subscriptions, updated in place (SQLite or Postgres)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from loopline.simulate import model as m
from loopline.simulate.engine import day_epoch
from loopline.simulate.state import SimState
from loopline.simulate.writers.common import user_emails

USER_DEFECTS = {1: "future_birth_date", 2: "null_country"}

_DDL = {
    "users": """create table if not exists src.users (
        user_id bigint primary key, email varchar not null, signup_at timestamp not null,
        country varchar, birth_date date, acquisition_channel varchar, primary_device varchar,
        updated_at timestamp not null)""",
    "plans": """create table if not exists src.plans (
        plan_id integer primary key, name varchar not null, max_streams integer not null)""",
    "plan_prices": """create table if not exists src.plan_prices (
        plan_id integer not null, currency varchar not null, monthly_price_minor bigint not null,
        updated_at timestamp not null, primary key (plan_id, currency))""",
    "subscriptions": """create table if not exists src.subscriptions (
        subscription_id bigint primary key, user_id bigint not null, plan_id integer not null,
        status varchar not null, started_at timestamp not null, paused_at timestamp,
        resume_on date, cancelled_at timestamp, updated_at timestamp not null)""",
}


OLTP_TABLES = tuple(_DDL)


def write_oltp(state: SimState, url: str, since_epoch: int) -> None:
    """Upsert what changed since `since_epoch` into the OLTP database (SQLite or Postgres)."""
    from loopline.warehouse import attach_source

    u = state.users
    cfg = state.config
    con = duckdb.connect()
    attach_source(con, url)
    for ddl in _DDL.values():
        con.execute(ddl)
    # users: new sign-ups (a user row never changes after sign-up here)
    new = (
        np.flatnonzero(u["signup_at"] >= since_epoch)
        if since_epoch > 0
        else np.arange(state.n_users)
    )
    users = pd.DataFrame(
        {
            "user_id": u["user_id"][new],
            "email": user_emails(state, new),
            "signup_at": pd.to_datetime(u["signup_at"][new], unit="s"),
            "country": np.where(
                u["defect"][new] == 2, None, np.array(m.COUNTRIES, dtype=object)[u["country"][new]]
            ),
            "birth_date": pd.to_datetime(u["birth_date"][new].astype(np.int64), unit="D").date,
            "acquisition_channel": np.array(m.CHANNELS)[u["channel"][new]],
            "primary_device": np.array(m.DEVICES)[u["device"][new]],
            "updated_at": pd.to_datetime(u["signup_at"][new], unit="s"),
        }
    )
    changed = (
        np.flatnonzero((u["sub_updated_at"] >= since_epoch) | (u["signup_at"] >= since_epoch))
        if since_epoch > 0
        else np.arange(state.n_users)
    )
    status = np.array(["active", "paused", "cancelled"])[u["status"][changed]]
    subs = pd.DataFrame(
        {
            "subscription_id": 100_000 + u["user_id"][changed],
            "user_id": u["user_id"][changed],
            "plan_id": u["plan_id"][changed].astype(np.int32),
            "status": status,
            "started_at": pd.to_datetime(u["sub_started_at"][changed], unit="s"),
            "paused_at": pd.to_datetime(
                np.where(
                    u["paused_at"][changed] >= 0, u["paused_at"][changed], np.iinfo(np.int64).min
                ),
                unit="s",
                errors="coerce",
            ),
            "resume_on": [
                cfg.date_of(int(d)) if s == "paused" else None
                for d, s in zip(u["resume_day"][changed], status, strict=True)
            ],
            "cancelled_at": pd.to_datetime(
                np.where(
                    u["cancelled_at"][changed] >= 0,
                    u["cancelled_at"][changed],
                    np.iinfo(np.int64).min,
                ),
                unit="s",
                errors="coerce",
            ),
            "updated_at": pd.to_datetime(u["sub_updated_at"][changed], unit="s"),
        }
    )
    plans = pd.DataFrame(
        {
            "plan_id": [p[0] for p in m.PLANS],
            "name": [p[1] for p in m.PLANS],
            "max_streams": [p[3] for p in m.PLANS],
        }
    )
    prices = []
    for plan_id, _, usd, _ in m.PLANS:
        for cur in sorted(set(m.CURRENCY.values())):
            local = usd * state.plan_price_factor * m.FX_PER_USD[cur]
            minor = (
                int(round(local / 10) * 10)
                if m.MINOR_EXPONENT[cur] == 0
                else int(np.floor(local) * 100 + 99)
            )
            prices.append(
                (
                    plan_id,
                    cur,
                    minor,
                    pd.Timestamp(
                        state.plan_prices_updated_at or day_epoch(cfg, 0) - 86_400 * 800, unit="s"
                    ),
                )
            )
    plan_prices = pd.DataFrame(
        prices, columns=["plan_id", "currency", "monthly_price_minor", "updated_at"]
    )
    for table, frame, keys in (
        ("plans", plans, ["plan_id"]),
        ("plan_prices", plan_prices, ["plan_id", "currency"]),
        ("users", users, ["user_id"]),
        ("subscriptions", subs, ["subscription_id"]),
    ):
        con.register("incoming", frame)
        match = " and ".join(f"t.{k} = i.{k}" for k in keys)
        con.execute("begin")
        con.execute(
            f"delete from src.{table} t where exists (select 1 from incoming i where {match})"
        )
        con.execute(f"insert into src.{table} select * from incoming order by {', '.join(keys)}")
        con.execute("commit")
        con.unregister("incoming")
    con.close()
