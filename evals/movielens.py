"""MovieLens in its CSV release format (`ratings.csv`, `movies.csv`), and a time-based split.

Any release in that format works unchanged (ml-latest-small, ml-latest, ml-25m, ml-32m): the
loader reads only `userId,movieId,rating,timestamp` and `movieId,title,genres`.

The split, per user: ratings sorted by time; the most recent `holdout` share (at least one) is
held out, the rest is training. Relevant = held-out ratings of at least `relevant_min`. Users
with nothing relevant held out are not evaluated. Candidates = every movie the user has not
rated in training (held-out movies included, relevant or not).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Movie:
    movie_id: str
    title: str
    genres: tuple[str, ...]

    def text(self) -> str:
        return f"{self.title}. {', '.join(self.genres)}"


@dataclass(frozen=True)
class Rating:
    user: str
    movie: str
    rating: float
    ts: int


@dataclass
class Split:
    movies: dict[str, Movie]
    train: dict[str, list[Rating]]  # per user, oldest first
    relevant: dict[str, set[str]]  # per evaluated user
    heldout: dict[str, list[Rating]]

    @property
    def users(self) -> list[str]:
        return sorted(self.relevant, key=_natural)

    def train_triples(self, *, min_rating: float = 0.0) -> list[tuple[str, str, float]]:
        return [
            (r.user, r.movie, r.rating)
            for ratings in self.train.values()
            for r in ratings
            if r.rating >= min_rating
        ]


def _natural(value: str) -> tuple[int, str]:
    return (int(value), value) if value.isdigit() else (math.inf, value)  # type: ignore[return-value]


def load_movies(folder: Path) -> dict[str, Movie]:
    path = folder / "movies.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a MovieLens CSV release?")
    with path.open(encoding="utf-8", newline="") as handle:
        return {
            row["movieId"]: Movie(
                row["movieId"],
                row["title"],
                tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)"),
            )
            for row in csv.DictReader(handle)
        }


def load_ratings(folder: Path) -> list[Rating]:
    path = folder / "ratings.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a MovieLens CSV release?")
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            Rating(row["userId"], row["movieId"], float(row["rating"]), int(row["timestamp"]))
            for row in csv.DictReader(handle)
        ]


def time_split(
    folder: Path,
    *,
    holdout: float = 0.2,
    relevant_min: float = 4.0,
    max_users: int | None = None,
    sample_users: int | None = None,
) -> Split:
    """The per-user time split of a release. `max_users` caps who is evaluated (everyone still
    trains); `sample_users` keeps only the first that many users (by id) altogether, training
    included, and only the movies they rated — a small, deterministic release for quick runs."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    movies = load_movies(folder)
    by_user: dict[str, list[Rating]] = defaultdict(list)
    for rating in load_ratings(folder):
        by_user[rating.user].append(rating)
    train: dict[str, list[Rating]] = {}
    relevant: dict[str, set[str]] = {}
    heldout: dict[str, list[Rating]] = {}
    for user in sorted(by_user, key=_natural)[:sample_users]:
        ratings = sorted(by_user[user], key=lambda r: (r.ts, r.movie))
        n_out = max(1, round(len(ratings) * holdout))
        if len(ratings) - n_out < 1:
            continue
        train[user] = ratings[:-n_out]
        seen = {r.movie for r in train[user]}
        out = [r for r in ratings[-n_out:] if r.movie not in seen]
        liked = {r.movie for r in out if r.rating >= relevant_min}
        if liked and (max_users is None or len(relevant) < max_users):
            relevant[user] = liked
            heldout[user] = out
    if sample_users is not None:  # the sample's catalogue: the movies its users rated
        rated = {r.movie for user in train for r in by_user[user]}
        movies = {m: movie for m, movie in movies.items() if m in rated}
    return Split(movies=movies, train=train, relevant=relevant, heldout=heldout)


def popularity(split: Split) -> dict[str, int]:
    """How many users rated each movie in training."""
    counts: dict[str, int] = defaultdict(int)
    for ratings in split.train.values():
        for r in ratings:
            counts[r.movie] += 1
    return dict(counts)


def novelty(recommended: list[str], counts: dict[str, int], n_users: int) -> float:
    """Mean self-information -log2(p) of recommended movies, p = share of users who rated it
    (unrated movies count as rated by one user, so new items score high but finite)."""
    if not recommended:
        return 0.0
    shares = np.array([max(counts.get(m, 0), 1) / n_users for m in recommended])
    return float(np.mean(-np.log2(shares)))


def validation_split(split: Split, *, holdout: float = 0.2, relevant_min: float = 4.0) -> Split:
    """A split carved from `split`'s training part only, for tuning: each user's training ratings
    are split again by time, the most recent `holdout` share held out. No held-out (test) rating
    of `split` can enter it, as training or as validation."""
    train: dict[str, list[Rating]] = {}
    relevant: dict[str, set[str]] = {}
    heldout: dict[str, list[Rating]] = {}
    for user, ratings in split.train.items():
        n_out = max(1, round(len(ratings) * holdout))
        if len(ratings) - n_out < 1:
            train[user] = list(ratings)  # too short to split: trains, is not evaluated
            continue
        train[user] = ratings[:-n_out]
        seen = {r.movie for r in train[user]}
        out = [r for r in ratings[-n_out:] if r.movie not in seen]
        liked = {r.movie for r in out if r.rating >= relevant_min}
        if liked:
            relevant[user] = liked
            heldout[user] = out
    return Split(movies=split.movies, train=train, relevant=relevant, heldout=heldout)
