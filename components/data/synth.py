"""A synthetic shop of any size in the raw contract (DATA_CONTRACT.md): events/ (several Parquet parts),
items/ and users/.

What makes it behave like a shop (each is a knob of :class:`SynthParams`):

* Sessions follow a funnel: 1+ views, some views put in the cart, some carts bought at one checkout at
  the end of the session, a few purchases returned days later. Purchases are a few % of views.
* Item popularity is Zipf-like (a head of best sellers, a long tail); items have a category (popular
  categories hold more items), a brand and a log-normal price around their category's level.
* Users have a country, a segment (casual/regular/loyal/wholesale: activity, cart rate, basket size),
  a primary and secondary favourite category, and a few favourite items they come back to and re-buy.
* Time: weekly and yearly seasonality (weekends, a pre-Christmas peak), a growth trend and a daily rhythm.
  New items are released during the window (never seen before release) and new users sign up during it;
  a newcomer's first session is at sign-up, so the last weeks hold cold users (first event near the end).
* Optional data-quality noise (off by default): duplicates, missing user ids, unknown event types,
  unparsable timestamps, zero quantities, items missing from the catalog; the ETL must reject each.

Scale: sessions are generated in vectorised numpy chunks of about ``events_per_part`` events, each chunk
from its own seeded stream and written as one part file, so memory is bounded by the chunk (not the
total) and the output is the same bytes for the same arguments. Exactly ``events`` rows are written:
the last session is cut at the end, tail first (returns, then purchases, then carts), so the funnel order
never breaks. Timestamps are Parquet ``timestamp[us, UTC]`` (ISO strings when noise is on, so that a bad
one can be written).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from components import schema as s
from components.data.online_retail import prepare_table_dirs
from components.errors import EcomrecError

logger = logging.getLogger(__name__)

# Attribute columns of items/ and users/ (strings are categorical features, numbers numeric ones).
CATEGORY_ATTR = s.ITEM_CATEGORY
BRAND_ATTR = s.ITEM_BRAND
COUNTRY_ATTR = s.USER_COUNTRY
SEGMENT_ATTR = s.USER_SEGMENT

REPORT_FILE = "_synth_report.json"
DAY = 86_400
I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

# (name, log of a typical price): the first n_categories are used.
CATEGORIES: tuple[tuple[str, float], ...] = (
    ("mugs", 2.0), ("candles", 1.8), ("bags", 2.6), ("cards", 0.9), ("lights", 2.8), ("clocks", 3.2),
    ("jewellery", 2.9), ("kitchen", 2.4), ("toys", 2.5), ("stationery", 1.4), ("frames", 2.3),
    ("garden", 3.0), ("textiles", 2.7), ("decorations", 1.6), ("storage", 2.8), ("bath", 2.1),
    ("party", 1.2), ("furniture", 4.6), ("electronics", 4.0), ("books", 2.6), ("beauty", 2.4),
    ("pets", 2.5), ("sports", 3.3), ("baby", 2.8), ("tableware", 2.2), ("gifts", 2.5), ("crafts", 1.9),
    ("outdoor", 3.4), ("lamps", 3.5), ("rugs", 3.9), ("wall-art", 3.1), ("tea", 1.7),
)
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("United Kingdom", 0.55), ("Germany", 0.09), ("France", 0.08), ("Ireland", 0.04), ("Spain", 0.04),
    ("Netherlands", 0.04), ("Belgium", 0.03), ("Switzerland", 0.03), ("Portugal", 0.02), ("Italy", 0.02),
    ("Norway", 0.02), ("Australia", 0.02), ("Sweden", 0.01), ("Denmark", 0.01),
)
# name, share, activity, favourite-view share, cart-rate multiplier, wholesale baskets
SEGMENTS: tuple[tuple[str, float, float, float, float, bool], ...] = (
    ("casual", 0.55, 0.5, 0.05, 0.8, False),
    ("regular", 0.30, 1.0, 0.15, 1.0, False),
    ("loyal", 0.10, 2.5, 0.35, 1.3, False),
    ("wholesale", 0.05, 2.0, 0.40, 1.6, True),
)
N_FAVOURITES = 4
DOW_WEIGHT = np.array([0.95, 0.92, 0.95, 1.0, 1.05, 1.15, 1.10])  # Monday .. Sunday
HOUR_WEIGHT = np.array([
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 1.0, 1.1, 1.2, 1.3,
    1.5, 1.4, 1.2, 1.1, 1.1, 1.2, 1.4, 1.7, 1.9, 1.8, 1.2, 0.6,
])
EVENT_TYPES = (s.VIEW, s.ADD_TO_CART, s.PURCHASE, s.RETURN, "click")  # "click": only as noise
VIEW_CODE, CART_CODE, PURCHASE_CODE, RETURN_CODE, NOISE_TYPE_CODE = range(5)
UNKNOWN_ITEM = "X-NOT-IN-CATALOG"
BAD_TIMESTAMP = "not-a-timestamp"


@dataclass(frozen=True)
class SynthParams:
    """Knobs of the synthetic shop; the defaults give a plausible small web shop."""

    users: int | None = None  # default: events // 25 (at least 20)
    items: int | None = None  # default: 5 * sqrt(events), 30 .. 200,000 (catalogues grow slower than traffic)
    start: str = "2024-01-01"
    days: int = 365
    events_per_part: int | None = None  # default: events / 8, 5,000 .. 1,000,000
    zipf_exponent: float = 1.05  # item popularity ~ 1 / rank^a
    mean_views_per_session: float = 3.5
    cart_rate: float = 0.06  # P(add_to_cart | view) for a regular user's non-favourite item
    purchase_rate: float = 0.4  # P(purchase | add_to_cart)
    favourite_cart_rate: float = 0.25
    favourite_purchase_rate: float = 0.6
    return_rate: float = 0.03
    new_user_share: float = 0.3  # users who sign up during the window (the rest existed before it)
    new_item_share: float = 0.2  # items released during the window
    growth: float = 0.3  # traffic at the end of the window vs the start, minus 1
    promo_rate: float = 0.1  # share of views seen at a 10-30 % discount
    quality_noise: float = 0.0  # share of event rows corrupted (0 = clean)

    def __post_init__(self) -> None:
        checks = {
            "days": self.days >= 7, "zipf_exponent": self.zipf_exponent > 0,
            "mean_views_per_session": self.mean_views_per_session >= 1,
            "users": self.users is None or self.users >= 1, "items": self.items is None or self.items >= 1,
            "events_per_part": self.events_per_part is None or self.events_per_part >= 1,
        }
        for name in ("cart_rate", "purchase_rate", "favourite_cart_rate", "favourite_purchase_rate",
                     "return_rate", "new_user_share", "new_item_share", "promo_rate", "quality_noise"):
            checks[name] = 0.0 <= getattr(self, name) <= 1.0
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise EcomrecError(f"invalid synthetic data parameter(s): {', '.join(bad)} ({self})")


@dataclass(frozen=True)
class SynthReport:
    dest: str
    seed: int
    events: int
    sessions: int
    parts: int
    users: int  # rows of users/
    active_users: int  # users with at least one event
    cold_users: int  # users whose first event is in the last 28 days
    items: int
    new_items: int  # released during the window
    categories: int
    brands: int
    by_type: dict[str, int]
    start: str
    end: str
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> list[tuple[str, str]]:
        rows = [("events", f"{self.events:,} in {self.parts} part(s)"), ("sessions", f"{self.sessions:,}")]
        rows += [(f"  {name}", f"{n:,}") for name, n in self.by_type.items()]
        rows += [
            ("users", f"{self.users:,} ({self.active_users:,} active, {self.cold_users:,} cold)"),
            ("items", f"{self.items:,} ({self.new_items:,} new, {self.categories} categories, "
                      f"{self.brands} brands)"),
            ("period", f"{self.start} .. {self.end}"),
            ("seed", str(self.seed)),
            ("seconds", f"{self.seconds:.2f}"),
        ]
        return rows


# ---------------------------------------------------------------------------------------------- world
@dataclass
class _Catalog:
    ids: pa.Array  # item_id strings (+ the unknown item at index n, used by noise only)
    category: I64
    price: F64
    release: I64  # seconds from start; 0 = on sale before the window
    n_categories: int
    # Items sorted by category with cumulative popularity, for sampling by popularity within a category.
    order: I64
    cum_pop: F64
    cat_lo: I64
    cat_hi: I64
    anchor: I64  # per category: its most popular item on sale from the start (the always-valid fallback)
    cat_weight: F64


@dataclass
class _Users:
    ids: pa.Array
    segment: I64
    primary: I64
    secondary: I64
    favourites: NDArray[np.int64]  # (n, N_FAVOURITES)
    signup: I64  # seconds from start; 0 = existing customer
    by_signup: I64  # user indices sorted by signup
    signup_sorted: I64
    cum_activity: F64  # cumulative activity over by_signup
    newcomers: I64  # users signing up in the window, in a random order (their first-visit sessions)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> F64:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights[rng.permutation(n)]


def _string_ids(prefix: str, n: int) -> pa.Array:
    width = max(5, len(str(max(n - 1, 0))))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], type=pa.string())


def _build_catalog(n_items: int, p: SynthParams, rng: np.random.Generator) -> tuple[_Catalog, pa.Table, int]:
    n_cat = int(np.clip(round(math.sqrt(n_items) / 2), 4, len(CATEGORIES)))
    n_cat = min(n_cat, n_items)
    cat_weight = _zipf(n_cat, 0.8, rng)
    cat_weight /= cat_weight.sum()
    category = np.empty(n_items, dtype=np.int64)
    category[:n_cat] = np.arange(n_cat)  # every category holds at least one item
    category[n_cat:] = rng.choice(n_cat, size=n_items - n_cat, p=cat_weight)
    popularity = _zipf(n_items, p.zipf_exponent, rng) * rng.lognormal(0.0, 0.3, n_items)
    log_price = np.array([mu for _, mu in CATEGORIES[:n_cat]])[category] + rng.normal(0.0, 0.5, n_items)
    price = np.maximum(np.round(np.exp(log_price), 2), 0.1)
    release = np.where(rng.random(n_items) < p.new_item_share,
                       rng.integers(1, p.days * DAY, n_items), 0).astype(np.int64)
    n_brands = int(np.clip(n_items // 15, 3, 5000))
    brand = rng.choice(n_brands, size=n_items, p=_normalised(_zipf(n_brands, 0.9, rng)))

    order = np.lexsort((np.arange(n_items), category)).astype(np.int64)
    sorted_cat = category[order]
    cat_lo = np.searchsorted(sorted_cat, np.arange(n_cat), side="left").astype(np.int64)
    cat_hi = np.searchsorted(sorted_cat, np.arange(n_cat), side="right").astype(np.int64)
    anchor = np.empty(n_cat, dtype=np.int64)
    for c in range(n_cat):
        members = order[cat_lo[c]:cat_hi[c]]
        best = members[np.argmax(popularity[members])]
        release[best] = 0  # the category's best seller is on sale from the start
        anchor[c] = best
    cum_pop = np.cumsum(popularity[order])

    ids = _string_ids("P", n_items)
    brand_names = _string_ids("brand-", n_brands)
    items = pa.table({
        s.ITEM_ID: ids,
        CATEGORY_ATTR: pa.array([name for name, _ in CATEGORIES[:n_cat]], pa.string()).take(category),
        BRAND_ATTR: brand_names.take(pa.array(brand)),
        s.PRICE: pa.array(price, pa.float64()),
    })
    catalog = _Catalog(
        ids=pa.concat_arrays([ids, pa.array([UNKNOWN_ITEM], pa.string())]),
        category=category, price=price, release=release, n_categories=n_cat, order=order, cum_pop=cum_pop,
        cat_lo=cat_lo, cat_hi=cat_hi, anchor=anchor, cat_weight=cat_weight,
    )
    return catalog, items, n_brands


def _normalised(weights: F64) -> F64:
    return weights / weights.sum()


def _sample_in_categories(cat: _Catalog, cats: I64, rng: np.random.Generator) -> I64:
    """One item per entry of ``cats``, by popularity within that category."""
    lo_cum = np.where(cat.cat_lo[cats] > 0, cat.cum_pop[np.maximum(cat.cat_lo[cats] - 1, 0)], 0.0)
    hi_cum = cat.cum_pop[cat.cat_hi[cats] - 1]
    pos = np.searchsorted(cat.cum_pop, lo_cum + rng.random(len(cats)) * (hi_cum - lo_cum), side="right")
    pos = np.clip(pos, cat.cat_lo[cats], cat.cat_hi[cats] - 1)
    return cat.order[pos]


def _sample_global(cat: _Catalog, n: int, rng: np.random.Generator) -> I64:
    pos = np.searchsorted(cat.cum_pop, rng.random(n) * cat.cum_pop[-1], side="right")
    return cat.order[np.minimum(pos, len(cat.order) - 1)]


def _build_users(
    n_users: int, cat: _Catalog, p: SynthParams, rng: np.random.Generator
) -> tuple[_Users, pa.Table]:
    seg_share = _normalised(np.array([seg[1] for seg in SEGMENTS]))
    segment = rng.choice(len(SEGMENTS), size=n_users, p=seg_share).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=n_users, p=_normalised(np.array([c[1] for c in COUNTRIES])))
    activity = rng.lognormal(0.0, 0.8, n_users) * np.array([seg[2] for seg in SEGMENTS])[segment]
    signup = np.where(rng.random(n_users) < p.new_user_share,
                      rng.integers(1, p.days * DAY, n_users), 0).astype(np.int64)
    signup[0] = 0  # someone is always there on day one
    primary = rng.choice(cat.n_categories, size=n_users, p=cat.cat_weight).astype(np.int64)
    secondary = rng.choice(cat.n_categories, size=n_users, p=cat.cat_weight).astype(np.int64)
    fav_cats = np.column_stack([primary] * (N_FAVOURITES - 1) + [secondary])
    favourites = _sample_in_categories(cat, fav_cats.ravel(), rng).reshape(n_users, N_FAVOURITES)

    by_signup = np.lexsort((np.arange(n_users), signup)).astype(np.int64)
    newcomers = np.flatnonzero(signup > 0).astype(np.int64)
    users = _Users(
        ids=_string_ids("U", n_users), segment=segment, primary=primary, secondary=secondary,
        favourites=favourites, signup=signup, by_signup=by_signup, signup_sorted=signup[by_signup],
        cum_activity=np.cumsum(activity[by_signup]), newcomers=newcomers[rng.permutation(len(newcomers))],
    )
    table = pa.table({
        s.USER_ID: users.ids,
        COUNTRY_ATTR: pa.array([c[0] for c in COUNTRIES], pa.string()).take(pa.array(country)),
        SEGMENT_ATTR: pa.array([seg[0] for seg in SEGMENTS], pa.string()).take(pa.array(segment)),
    })
    return users, table


def _day_weights(start: np.datetime64, days: int, growth: float) -> F64:
    dates = start + np.arange(days).astype("timedelta64[D]")
    dow = (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
    # a mild winter high plus a pre-Christmas peak around the start of December
    yearly = 1.0 + 0.12 * np.cos(2 * np.pi * (doy - 20) / 365.25)
    yearly += 0.45 * np.exp(-0.5 * ((doy - 335) / 18) ** 2)
    trend = 1.0 + growth * np.arange(days) / days
    return np.asarray(DOW_WEIGHT[dow] * yearly * trend, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- sessions
@dataclass
class _Chunk:
    session: I64  # global session index
    user: I64
    item: I64
    code: I64
    t: I64  # seconds from start
    quantity: I64
    price: F64


def _session_starts(
    n: int, first_index: int, users: _Users, day_cdf: F64, hour_p: F64, rng: np.random.Generator
) -> tuple[I64, I64]:
    """(user, start second) per session: newcomers' first visits at sign-up, then seasonal traffic drawn
    among users already signed up, in proportion to their activity."""
    index = first_index + np.arange(n)
    first_visit = index < len(users.newcomers)
    user = np.empty(n, dtype=np.int64)
    t0 = np.empty(n, dtype=np.int64)
    newcomer = users.newcomers[index[first_visit]]
    user[first_visit] = newcomer
    t0[first_visit] = users.signup[newcomer] + rng.integers(0, 600, int(first_visit.sum()))

    m = int((~first_visit).sum())
    day = np.minimum(np.searchsorted(day_cdf, rng.random(m) * day_cdf[-1], side="right"), len(day_cdf) - 1)
    hour = rng.choice(24, size=m, p=hour_p)
    t = day * DAY + hour * 3600 + rng.integers(0, 3600, m)
    eligible = np.searchsorted(users.signup_sorted, t, side="right")  # >= 1: user 0 signs up at 0
    pos = np.searchsorted(users.cum_activity, rng.random(m) * users.cum_activity[eligible - 1], side="right")
    user[~first_visit] = users.by_signup[np.minimum(pos, eligible - 1)]
    t0[~first_visit] = t
    return user, t0


def _pick_items(
    n_views: I64, user: I64, t_view: I64, cat: _Catalog, users: _Users, rng: np.random.Generator
) -> tuple[I64, NDArray[np.bool_]]:
    """Item per view: a favourite (segment-dependent share), else the session's focus category by
    popularity (75 %), else anything by popularity; never an item before its release."""
    n_sessions = len(n_views)
    focus_draw = rng.random(n_sessions)
    focus = np.where(focus_draw < 0.65, users.primary[user],
                     np.where(focus_draw < 0.9, users.secondary[user],
                              rng.choice(cat.n_categories, size=n_sessions, p=cat.cat_weight)))
    view_session = np.repeat(np.arange(n_sessions), n_views)
    view_user = user[view_session]
    view_focus = focus[view_session]
    m = len(view_session)
    fav_share = np.array([seg[3] for seg in SEGMENTS])[users.segment[view_user]]
    draw = rng.random(m)
    is_fav = draw < fav_share
    in_focus = ~is_fav & (draw < fav_share + (1 - fav_share) * 0.75)
    item = np.empty(m, dtype=np.int64)
    item[is_fav] = users.favourites[view_user[is_fav], rng.integers(0, N_FAVOURITES, int(is_fav.sum()))]
    item[in_focus] = _sample_in_categories(cat, view_focus[in_focus], rng)
    other = ~is_fav & ~in_focus
    item[other] = _sample_global(cat, int(other.sum()), rng)
    for _ in range(4):  # redraw within the focus category while the item is not on sale yet
        early = np.flatnonzero(cat.release[item] > t_view)
        if not len(early):
            break
        item[early] = _sample_in_categories(cat, view_focus[early], rng)
        is_fav[early] = False
    early = np.flatnonzero(cat.release[item] > t_view)
    item[early] = cat.anchor[view_focus[early]]
    is_fav[early] = False
    return item, is_fav


def _generate_sessions(
    n: int, first_index: int, cat: _Catalog, users: _Users, p: SynthParams, day_cdf: F64, hour_p: F64,
    end: int, rng: np.random.Generator,
) -> _Chunk:
    user, t0 = _session_starts(n, first_index, users, day_cdf, hour_p, rng)
    n_views = np.minimum(rng.geometric(1.0 / p.mean_views_per_session, n), 50).astype(np.int64)
    view_session = np.repeat(np.arange(n), n_views)
    gaps = rng.exponential(45.0, len(view_session)).astype(np.int64) + 5
    starts = np.cumsum(n_views) - n_views
    total = np.cumsum(gaps)
    within = total - np.repeat(total[starts] - gaps[starts], n_views)  # cumsum restarted per session
    t_view = np.minimum(t0[view_session] + within - gaps[starts][view_session], end)
    item, is_fav = _pick_items(n_views, user, t_view, cat, users, rng)

    v_user = user[view_session]
    seg = users.segment[v_user]
    cart_mult = np.array([sg[4] for sg in SEGMENTS])[seg]
    cart_p = np.where(is_fav, p.favourite_cart_rate, np.minimum(p.cart_rate * cart_mult, 1.0))
    carted = rng.random(len(item)) < cart_p
    bought = carted & (rng.random(len(item)) < np.where(is_fav, p.favourite_purchase_rate, p.purchase_rate))
    returned = bought & (rng.random(len(item)) < p.return_rate)

    promo = rng.random(len(item)) < p.promo_rate
    price = np.round(cat.price[item] * np.where(promo, 1.0 - rng.uniform(0.1, 0.3, len(item)), 1.0), 2)
    wholesale = np.array([sg[5] for sg in SEGMENTS])[seg]
    qty = np.where(wholesale, 1 + rng.poisson(11.0, len(item)), rng.geometric(0.7, len(item)))
    qty = qty.astype(np.int64)
    last_view = t_view[starts + n_views - 1]
    checkout = np.minimum(last_view + rng.integers(30, 300, n), end)[view_session]
    t_cart = np.minimum(t_view + rng.integers(5, 25, len(item)), end)
    t_return = np.minimum(checkout + rng.integers(2 * DAY, 30 * DAY, len(item)), end)
    returned_qty = np.minimum(rng.integers(1, 4, len(item)), qty)

    parts = [
        (np.ones(len(item), dtype=bool), VIEW_CODE, t_view, np.ones(len(item), dtype=np.int64)),
        (carted, CART_CODE, t_cart, np.ones(len(item), dtype=np.int64)),
        (bought, PURCHASE_CODE, checkout, qty),
        (returned, RETURN_CODE, t_return, returned_qty),
    ]
    session = np.concatenate([view_session[mask] for mask, *_ in parts])
    chunk = _Chunk(
        session=session + first_index,
        user=np.concatenate([v_user[mask] for mask, *_ in parts]),
        item=np.concatenate([item[mask] for mask, *_ in parts]),
        code=np.concatenate([np.full(int(mask.sum()), code, dtype=np.int64) for mask, code, *_ in parts]),
        t=np.concatenate([when[mask] for mask, _, when, _ in parts]),
        quantity=np.concatenate([q[mask] for mask, _, _, q in parts]),
        price=np.concatenate([price[mask] for mask, *_ in parts]),
    )
    # Session-major, time order inside a session: cutting the tail keeps every session's funnel intact.
    return _take(chunk, np.lexsort((chunk.code, chunk.t, chunk.session)))


def _take(chunk: _Chunk, index: I64) -> _Chunk:
    return _Chunk(**{name: getattr(chunk, name)[index] for name in chunk.__dataclass_fields__})


def _chunks(
    events: int, per_part: int, cat: _Catalog, users: _Users, p: SynthParams, start_ts: np.datetime64,
    seed: int,
) -> Iterator[_Chunk]:
    day_cdf = np.cumsum(_day_weights(start_ts, p.days, p.growth))
    hour_p = _normalised(HOUR_WEIGHT.astype(np.float64))
    end = p.days * DAY - 1
    done, next_session, per_session, index = 0, 0, 4.0, 0
    while done < events:
        target = min(per_part, events - done)
        n_sessions = max(1, math.ceil(target * 1.02 / per_session))  # a little over: the cut ends the run
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
        chunk = _generate_sessions(n_sessions, next_session, cat, users, p, day_cdf, hour_p, end, rng)
        per_session = max(len(chunk.session) / n_sessions, 1.0)
        if len(chunk.session) > target:
            chunk = _take(chunk, np.arange(target))
        next_session = int(chunk.session[-1]) + 1 if len(chunk.session) else next_session + n_sessions
        done += len(chunk.session)
        index += 1
        yield chunk


# ---------------------------------------------------------------------------------------------- writing
def _add_noise(chunk: _Chunk, share: float, n_items: int, rng: np.random.Generator) -> tuple[_Chunk, I64]:
    """Corrupt ``share`` of the rows, one defect each; returns the chunk and a per-row defect code
    (0 none, 1 duplicate, 2 no user, 3 unknown type, 4 bad timestamp, 5 zero quantity, 6 unknown item)."""
    n = len(chunk.session)
    defect = np.where(rng.random(n) < share, rng.integers(1, 7, n), 0).astype(np.int64)
    defect[0] = 0 if defect[0] == 1 else defect[0]  # the first row has nothing to duplicate
    source = np.arange(n)
    source[defect == 1] -= 1
    chunk = _take(chunk, source)
    chunk.code[defect == 3] = NOISE_TYPE_CODE
    chunk.quantity[defect == 5] = 0
    chunk.item[defect == 6] = n_items
    return chunk, defect


def _events_table(
    chunk: _Chunk, cat: _Catalog, users: _Users, start_ts: np.datetime64, defect: I64 | None
) -> pa.Table:
    seconds = start_ts.astype("datetime64[s]").astype(np.int64) + chunk.t
    if defect is None:
        timestamps: pa.Array = pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
    else:
        iso = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype(object)
        iso[defect == 4] = BAD_TIMESTAMP
        timestamps = pa.array(iso, pa.string())
    user_ids = users.ids.take(pa.array(chunk.user))
    if defect is not None and (defect == 2).any():
        user_ids = pc.if_else(pa.array(defect == 2), pa.scalar(None, pa.string()), user_ids)
    sessions = pc.binary_join_element_wise("S", pa.array(chunk.session).cast(pa.string()), "")
    return pa.table({
        s.USER_ID: user_ids,
        s.ITEM_ID: cat.ids.take(pa.array(chunk.item)),
        s.EVENT_TYPE: pa.array(EVENT_TYPES, pa.string()).take(pa.array(chunk.code)),
        s.TIMESTAMP: timestamps,
        s.QUANTITY: pa.array(chunk.quantity, pa.int64()),
        s.PRICE: pa.array(chunk.price, pa.float64()),
        s.SESSION_ID: sessions,
    })


def default_sizes(events: int, params: SynthParams) -> tuple[int, int, int]:
    """(users, items, events per part) for ``events``: users ~ events/25, items ~ 5 sqrt(events)."""
    n_users = params.users or max(20, events // 25)
    n_items = params.items or int(np.clip(round(5 * math.sqrt(events)), 30, 200_000))
    per_part = params.events_per_part or int(np.clip(math.ceil(events / 8), 5_000, 1_000_000))
    return n_users, n_items, per_part


def generate_synthetic(
    dest: Path,
    *,
    events: int,
    seed: int,
    params: SynthParams | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthReport:
    """Write a synthetic shop with exactly ``events`` events to ``dest/events/`` (part files of about
    ``params.events_per_part`` rows), ``dest/items/``, ``dest/users/`` and ``dest/_synth_report.json``.
    The same ``events``, ``seed`` and ``params`` give the same bytes."""
    if events < 1:
        raise EcomrecError(f"events must be >= 1, got {events}")
    p = params or SynthParams()
    started = time.perf_counter()
    dest = Path(dest)
    n_users, n_items, per_part = default_sizes(events, p)
    try:
        start_ts = np.datetime64(p.start, "D")
    except ValueError as exc:
        raise EcomrecError(f"start must be a date like 2024-01-01, got {p.start!r}") from exc

    world = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    cat, items_table, n_brands = _build_catalog(n_items, p, world)
    users, users_table = _build_users(n_users, cat, p, world)

    prepare_table_dirs(dest, s.RAW_TABLES, overwrite=overwrite)
    pq.write_table(items_table, dest / s.ITEMS / "part-00000.parquet", compression="snappy")
    pq.write_table(users_table, dest / s.USERS / "part-00000.parquet", compression="snappy")

    first_event = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    by_type = dict.fromkeys(EVENT_TYPES[:4], 0)
    written = sessions = parts = 0
    columns = [TextColumn("[bold]synthetic events"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("events", total=events)
        for chunk in _chunks(events, per_part, cat, users, p, start_ts, seed):
            defect = None
            if p.quality_noise > 0:
                noise_rng = np.random.default_rng(np.random.SeedSequence([seed, 2, parts]))
                chunk, defect = _add_noise(chunk, p.quality_noise, n_items, noise_rng)
            np.minimum.at(first_event, chunk.user, chunk.t)
            counts = np.bincount(chunk.code, minlength=len(EVENT_TYPES))
            for code, name in enumerate(EVENT_TYPES[:4]):
                by_type[name] += int(counts[code])
            sessions = max(sessions, int(chunk.session.max()) + 1)
            order = np.argsort(chunk.t, kind="stable")  # a part reads like a log: in time order
            table = _events_table(_take(chunk, order), cat, users, start_ts,
                                  None if defect is None else defect[order])
            pq.write_table(table, dest / s.EVENTS / f"part-{parts:05d}.parquet", compression="snappy")
            written += table.num_rows
            parts += 1
            bar.advance(task, table.num_rows)
            logger.debug("part %d: %d events", parts, table.num_rows)

    end_second = p.days * DAY
    active = first_event < np.iinfo(np.int64).max
    report = SynthReport(
        dest=str(dest), seed=seed, events=written, sessions=sessions, parts=parts, users=n_users,
        active_users=int(active.sum()),
        cold_users=int((active & (first_event >= end_second - 28 * DAY)).sum()),
        items=n_items, new_items=int((cat.release > 0).sum()), categories=cat.n_categories, brands=n_brands,
        by_type=by_type, start=str(start_ts), end=str(start_ts + np.timedelta64(p.days, "D")),
        seconds=round(time.perf_counter() - started, 3),
        params={**asdict(p), "users": n_users, "items": n_items, "events_per_part": per_part},
    )
    (dest / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    logger.info("synthetic shop: %s", ", ".join(f"{k.strip()}={v}" for k, v in report.summary()))
    return report
