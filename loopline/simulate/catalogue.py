"""The show catalogue: generated once, then grown and edited day by day."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopline.simulate.model import GENRES, MOVIE_SHARE

_FIRST = ("Ava", "Ben", "Chloe", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivo", "Jun", "Kofi", "Lena",
          "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Vik", "Wen", "Yara")  # fmt: skip
_LAST = ("Adams", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
         "Khan", "Lopez", "Moreau", "Novak", "Okafor", "Park", "Rossi", "Silva", "Tanaka", "Weber")  # fmt: skip
_WORDS = ("Night", "River", "Echo", "Kingdom", "Signal", "Paper", "Glass", "Harbor", "Winter", "Orbit",
          "Hidden", "Last", "Silent", "Golden", "Broken", "Wild", "Secret", "Iron", "Velvet", "Lost")  # fmt: skip
_RATINGS = ("G", "PG", "PG-13", "R", "TV-MA")
_LANGS = ("en", "en", "en", "es", "fr", "de", "ja", "ko", "pt", "hi")
_ROLES = ("lead", "lead", "supporting", "supporting", "guest", "director")

DAY_S = 86_400


def new_shows(
    rng: np.random.Generator, first_id: int, count: int, release_day: np.ndarray, day0_epoch: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`count` new shows (ids from `first_id`) with their episodes.

    `release_day` is each show's day index (negative: released before the start). The
    popularity column is the simulator's truth; the API does not publish it.
    """
    ids = np.arange(first_id, first_id + count)
    n_genres = rng.integers(1, 4, count)
    primary = rng.integers(0, len(GENRES), count)
    is_movie = rng.random(count) < MOVIE_SHARE
    popularity = rng.lognormal(0.0, 1.0, count)
    released_at = day0_epoch + release_day * DAY_S + rng.integers(0, DAY_S, count)
    rows = []
    episode_rows = []
    for i in range(count):
        genres = [GENRES[primary[i]]]
        for extra in rng.choice(len(GENRES), size=3, replace=False):
            if len(genres) >= n_genres[i]:
                break
            if GENRES[extra] not in genres:
                genres.append(GENRES[extra])
        cast = []
        for _ in range(int(rng.integers(2, 6))):
            role = _ROLES[int(rng.integers(0, len(_ROLES)))]
            cast.append(
                {
                    "name": f"{_FIRST[int(rng.integers(0, len(_FIRST)))]} {_LAST[int(rng.integers(0, len(_LAST)))]}",
                    "role": role,
                    "character": None
                    if role == "director"
                    else _FIRST[int(rng.integers(0, len(_FIRST)))],
                }
            )
        title = f"{_WORDS[int(rng.integers(0, len(_WORDS)))]} {_WORDS[int(rng.integers(0, len(_WORDS)))]}"
        rows.append(
            {
                "show_id": f"sh_{ids[i]:05d}",
                "title": title if not is_movie[i] else f"{title}: The Movie",
                "genres": genres,
                "cast": cast,
                "release_date": pd.Timestamp(int(released_at[i]), unit="s").date(),
                "maturity_rating": _RATINGS[int(rng.integers(0, len(_RATINGS)))],
                "language": _LANGS[int(rng.integers(0, len(_LANGS)))],
                "description": f"A {genres[0]} {'film' if is_movie[i] else 'series'} about {_WORDS[int(rng.integers(0, len(_WORDS)))].lower()} things.",
                "updated_at": int(released_at[i]),
                # truth, not published
                "primary_genre": int(primary[i]),
                "is_movie": bool(is_movie[i]),
                "popularity": float(popularity[i]),
                "release_day": int(release_day[i]),
            }
        )
        if is_movie[i]:
            seasons, per_season = 1, 1
            duration = rng.integers(85 * 60, 135 * 60, 1)
        else:
            seasons = int(rng.integers(1, 5))
            per_season = int(rng.integers(6, 13))
            base = (
                25 * 60
                if GENRES[primary[i]] in ("comedy", "animation", "kids", "reality")
                else 50 * 60
            )
            duration = rng.integers(int(base * 0.85), int(base * 1.15), seasons * per_season)
        for s in range(seasons):
            for e in range(per_season):
                k = s * per_season + e
                episode_rows.append(
                    {
                        "show_id": f"sh_{ids[i]:05d}",
                        "season": s + 1,
                        "episode_number": e + 1,
                        "title": "Feature" if is_movie[i] else f"Episode {e + 1}",
                        "duration_s": int(duration[k]),
                        "released_at": int(released_at[i]),
                        "updated_at": int(released_at[i]),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(episode_rows)


def number_episodes(episodes: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """Give new episode rows their ids, in order, from `first_id`."""
    out = episodes.copy()
    out.insert(0, "episode_id", [f"ep_{i:06d}" for i in range(first_id, first_id + len(out))])
    return out
