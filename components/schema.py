"""The one schema module: column names, table paths, file names and fold names.

Every step (ETL, ALS, ranker, evaluation, bundle, serving) imports names from here and nowhere else, so a
renamed column is one edit. Paths are relative to the step's own output directory (``OUTPUT/<step>/``).
"""

from __future__ import annotations

from typing import Final, Literal

# ---------------------------------------------------------------- raw contract (DATA_CONTRACT.md)
USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
EVENT_TYPE: Final = "event_type"
TIMESTAMP: Final = "timestamp"
QUANTITY: Final = "quantity"
PRICE: Final = "price"
SESSION_ID: Final = "session_id"

EVENTS: Final = "events"
ITEMS: Final = "items"
USERS: Final = "users"
RAW_TABLES: Final = (EVENTS, ITEMS, USERS)
REQUIRED_EVENT_COLUMNS: Final = (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP)
OPTIONAL_EVENT_COLUMNS: Final = (QUANTITY, PRICE, SESSION_ID)
# The durable event log (components/realtime/log.py): the contract's columns plus the client's event id.
EVENT_ID: Final = "event_id"
EVENT_LOG_COLUMNS: Final = (*REQUIRED_EVENT_COLUMNS, *OPTIONAL_EVENT_COLUMNS, EVENT_ID)
# A CSV file named *.headerless.csv under events/ has no header row: its columns are EVENT_LOG_COLUMNS in
# that order. Kinesis Data Firehose writes the log on AWS and concatenates records, so it cannot write one.
HEADERLESS_CSV_SUFFIX: Final = ".headerless.csv"

VIEW: Final = "view"
ADD_TO_CART: Final = "add_to_cart"
PURCHASE: Final = "purchase"
RETURN: Final = "return"
EVENT_TYPES: Final = (VIEW, ADD_TO_CART, PURCHASE, RETURN)

# Attribute columns the bundled adapters write (components/data): items/ item_id, description (Online
# Retail), ITEM_CATEGORY, brand (synthetic), price; users/ user_id, country, customer_segment (synthetic).
ITEM_DESCRIPTION: Final = "description"
ITEM_BRAND: Final = "brand"
USER_COUNTRY: Final = "country"
USER_SEGMENT: Final = "customer_segment"  # casual/regular/loyal/wholesale; not the warm/cold SEGMENT

# ---------------------------------------------------------------- ids
USER_IDX: Final = "user_idx"  # dense int32 index, 0..n_users-1, from id_maps/users
ITEM_IDX: Final = "item_idx"  # dense int32 index, 0..n_items-1, from id_maps/items

# ---------------------------------------------------------------- ETL output (OUTPUT/etl/)
REASON: Final = "reason"  # rejected/<table>/: every original column as string + reason + source_file
SOURCE_FILE: Final = "source_file"
CLEAN_DIR: Final = "clean"  # clean/<table>/ Parquet; events gain user_idx, item_idx
REJECTED_DIR: Final = "rejected"
ID_MAPS_DIR: Final = "id_maps"  # id_maps/users/ (user_id, user_idx), id_maps/items/ (item_id, item_idx)
# windows.json: {"test_start", "label_start", "end", "test_days", "label_days"}, ISO-8601 UTC
WINDOWS_FILE: Final = "windows.json"
VALIDATION_REPORT_FILE: Final = "validation_report.json"  # per table: input, accepted, rejected {reason: n}
# features.json: {"user": [...], "item": [...], "user_item": [...], "categorical": [...]}
FEATURES_FILE: Final = "features.json"
FOLDS_DIR: Final = "folds"

# A fold is a cutoff: features, interactions and candidates use only events strictly before it; its
# targets are the distinct purchases in the window that follows it (EVALUATION.md).
Fold = Literal["train", "test"]
TRAIN_FOLD: Final = "train"  # cutoff = label_start, targets = purchases in [label_start, test_start)
TEST_FOLD: Final = "test"  # cutoff = test_start, targets = purchases in [test_start, end]
FOLDS: Final[tuple[Fold, ...]] = ("train", "test")

# Tables inside folds/<fold>/ (Parquet folders)
INTERACTIONS: Final = "interactions"  # user_idx, item_idx, weight (float64 > 0), before the cutoff
USER_FEATURES: Final = "user_features"  # user_idx + features.json["user"]
ITEM_FEATURES: Final = "item_features"  # item_idx + features.json["item"]
USER_ITEM_FEATURES: Final = "user_item_features"  # user_idx, item_idx + features.json["user_item"]
TARGETS: Final = "targets"  # user_idx, item_idx: distinct purchases in the fold's target window
TARGET_USERS: Final = "target_users"  # user_idx, segment: users with >= 1 target purchase
# Test fold only, for real-time features (components/realtime/features.py): the history the fold's features
# are computed from (etl/features.py: fold_history of daily_table and of orders_table), carried by the bundle.
HISTORY_DAILY: Final = "history_daily"
HISTORY_ORDERS: Final = "history_orders"
WEIGHT: Final = "weight"
SEGMENT: Final = "segment"
WARM: Final = "warm"  # has events before the cutoff
COLD: Final = "cold"  # does not

# Feature names every step relies on (ETL writes them; evaluation baselines and serving read them).
ITEM_BUYERS_28D: Final = "i_buyers_28d"  # distinct buyers in the 28 days before the cutoff ('popular')
UI_PURCHASE_DAYS: Final = "ui_purchase_days"  # distinct days the user bought the item ('repurchase')
UI_DAYS_SINCE_LAST: Final = "ui_days_since_last"  # days from the user's last event on the item to cutoff

# All other ETL features (components/etl/features.py defines them; features.json lists what a run wrote).
# Durations are float days to the fold cutoff; counts use only events strictly before it.
U_N_EVENTS: Final = "u_n_events"
U_N_PURCHASE_DAYS: Final = "u_n_purchase_days"
U_N_INVOICES: Final = "u_n_invoices"  # distinct session_id of purchases (an order)
U_N_ITEMS: Final = "u_n_items"  # distinct items purchased
U_SPEND: Final = "u_spend"
U_AVG_BASKET_VALUE: Final = "u_avg_basket_value"
U_DAYS_SINCE_LAST: Final = "u_days_since_last"
U_DAYS_SINCE_FIRST: Final = "u_days_since_first"
U_PURCHASE_DAYS_28D: Final = "u_purchase_days_28d"
U_PURCHASE_DAYS_90D: Final = "u_purchase_days_90d"
U_MEAN_DAYS_BETWEEN_PURCHASES: Final = "u_mean_days_between_purchases"
U_AVG_ITEM_PRICE: Final = "u_avg_item_price"
ITEM_BUYERS_7D: Final = "i_buyers_7d"
ITEM_BUYERS_90D: Final = "i_buyers_90d"
ITEM_BUYERS_TOTAL: Final = "i_buyers_total"
ITEM_PURCHASE_DAYS_TOTAL: Final = "i_purchase_days_total"  # distinct (buyer, day) pairs
ITEM_TREND: Final = "i_trend"  # 7-day vs 28-day buyer rate, smoothed
ITEM_AVG_PRICE: Final = "i_avg_price"
ITEM_REPURCHASE_RATE: Final = "i_repurchase_rate"  # share of buyers who bought on >= 2 distinct days
ITEM_MEAN_REPURCHASE_INTERVAL: Final = "i_mean_repurchase_interval"
ITEM_DAYS_SINCE_FIRST_SALE: Final = "i_days_since_first_sale"
ITEM_DAYS_SINCE_LAST_SALE: Final = "i_days_since_last_sale"
UI_DAYS_SINCE_FIRST: Final = "ui_days_since_first"
UI_N_EVENTS: Final = "ui_n_events"
UI_QUANTITY: Final = "ui_quantity"
UI_SPEND: Final = "ui_spend"
UI_VIEWS: Final = "ui_views"
UI_CARTS: Final = "ui_carts"
UI_RETURNS: Final = "ui_returns"
UI_WEIGHT: Final = "ui_weight"  # the interaction weight (may be <= 0 here; interactions keep > 0)
UI_MEAN_INTERVAL_DAYS: Final = "ui_mean_interval_days"
UI_RECENCY_RATIO: Final = "ui_recency_ratio"  # days since last purchase / mean interval: "is it due?"
UI_PURCHASE_DAYS_90D: Final = "ui_purchase_days_90d"
UI_SHARE_OF_USER_DAYS: Final = "ui_share_of_user_days"
USER_ATTR_PREFIX: Final = "u_attr_"  # users/ attribute column c becomes feature u_attr_<c>
ITEM_ATTR_PREFIX: Final = "i_attr_"  # items/ attribute column c becomes feature i_attr_<c>
# folds/<fold>/user_category/ (user_idx, category, uc_share), written when items/ has a string "category"
USER_CATEGORY: Final = "user_category"
UC_SHARE: Final = "uc_share"  # share of the user's events before the cutoff on items of that category

# ---------------------------------------------------------------- ALS output (OUTPUT/als/)
USER_FACTORS: Final = "user_factors"  # folds/<fold>/user_factors/: user_idx, factors array<float>
ITEM_FACTORS: Final = "item_factors"  # folds/<fold>/item_factors/: item_idx, factors array<float>
FACTORS: Final = "factors"
CANDIDATES: Final = "candidates"  # folds/<fold>/candidates/: one row per (user_idx, item_idx)
ALS_SCORE: Final = "als_score"  # float, NaN when the pair did not come from ALS top-N
ALS_RANK: Final = "als_rank"  # int 1..N, 0 when not from ALS
# Source flags (bool) and scores of the other candidate generators
FROM_ALS: Final = "from_als"
FROM_HISTORY: Final = "from_history"  # the user's own past items
FROM_COOC: Final = "from_cooc"  # item-item co-occurrence with the user's items
FROM_POPULAR: Final = "from_popular"
COOC_SCORE: Final = "cooc_score"
CANDIDATE_SCORE_COLUMNS: Final = (ALS_SCORE, ALS_RANK, COOC_SCORE)
CANDIDATE_SOURCE_COLUMNS: Final = (FROM_ALS, FROM_HISTORY, FROM_COOC, FROM_POPULAR)
ALS_REPORT_FILE: Final = "als.json"

# ---------------------------------------------------------------- ranker data (OUTPUT/ranker_data/)
# Built-in SageMaker CatBoost format: channel dirs holding data.csv (no header, target first) and
# categorical_index.json {"cat_index_list": [...]} (indices into the CSV row, so >= 1).
TRAINING_CHANNEL: Final = "training"
VALIDATION_CHANNEL: Final = "validation"
CHANNELS: Final = (TRAINING_CHANNEL, VALIDATION_CHANNEL)
CHANNEL_DATA_FILE: Final = "data.csv"
CATEGORICAL_INDEX_FILE: Final = "categorical_index.json"
FEATURE_SPEC_FILE: Final = "feature_spec.json"  # {"features": [...ordered], "categorical": [...]}
SCORING_DIR: Final = "scoring"  # scoring/: user_idx, item_idx + features, the test fold's candidates
SCORING_WARM_DIR: Final = "scoring_warm"  # the same rows of the warm test-target users only: what evaluation scores
LABEL: Final = "label"
RANKER_DATA_REPORT_FILE: Final = "ranker_data.json"  # row/user counts, negatives sampled, dropped users
VALIDATION_RANKING_DIR: Final = "validation_ranking"  # validation users: all candidates, label, n_targets
N_TARGETS: Final = "n_targets"  # the user's target purchases in the fold: |R|, candidates or not

# ---------------------------------------------------------------- training (OUTPUT/train/)
MODEL_ARCHIVE: Final = "model.tar.gz"
MODEL_FILE: Final = "model"  # native CatBoost file inside model.tar.gz (the built-in algorithm's artifact)
TRAINING_REPORT_FILE: Final = "training_report.json"

# ---------------------------------------------------------------- evaluation (OUTPUT/evaluation/)
EVALUATION_FILE: Final = "evaluation.json"
GROUND_TRUTH_FILE: Final = "ground_truth.parquet"  # user_id, item_id, segment
RECOMMENDATIONS_FILE: Final = "recommendations.parquet"  # recommender, user_id, rank, item_id, score
REPORT_FILE: Final = "report.html"
RECOMMENDER: Final = "recommender"
RANK: Final = "rank"
SCORE: Final = "score"
POPULAR: Final = "popular"
REPURCHASE: Final = "repurchase"
ALS: Final = "als"
TWO_STAGE: Final = "two_stage"
TIFU_KNN: Final = "tifu_knn"
ITEMKNN: Final = "itemknn"
RECOMMENDERS: Final = (POPULAR, REPURCHASE, ALS, TWO_STAGE, TIFU_KNN, ITEMKNN)
# The bar a trained model must clear (EVALUATION.md): the strongest of these on the same run.
BASELINE_PEERS: Final = (POPULAR, REPURCHASE, TIFU_KNN, ITEMKNN)
# evaluation.json's gate block (the quality gate and SageMaker's JsonGet read these paths)
GATE_RATIO_PATH: Final = "gate.two_stage_over_strongest_baseline"
GATE_STRONGEST_PATH: Final = "gate.strongest_baseline"
GATE_STRONGEST_VALUE_PATH: Final = "gate.strongest_baseline_value"
METRICS: Final = ("precision", "recall", "hit_rate", "ndcg", "map", "coverage")
KS: Final = (10, 20)


def metric_key(metric: str, k: int) -> str:
    """``ndcg_at_10``: the key under ranking_metrics.<recommender> in evaluation.json."""
    return f"{metric}_at_{k}"


def metric_json_path(recommender: str, metric: str, k: int) -> str:
    """The JsonGet path of a metric in evaluation.json: one source for the writer and the quality gate."""
    return f"ranking_metrics.{recommender}.{metric_key(metric, k)}.value"


# ---------------------------------------------------------------- bundle (OUTPUT/bundle/model.tar.gz)
BUNDLE_MANIFEST: Final = "manifest.json"
BUNDLE_ID_MAPS: Final = "id_maps"  # users.parquet, items.parquet
BUNDLE_USER_FACTORS: Final = "als/user_factors.npy"
BUNDLE_ITEM_FACTORS: Final = "als/item_factors.npy"
BUNDLE_CANDIDATES: Final = "candidates"  # Parquet parts, ascending users: user_idx, item_idx, features
BUNDLE_POPULAR: Final = "popular.parquet"  # item_idx, score: the cold-user fallback, best first
BUNDLE_ITEMS: Final = "items.parquet"  # item_idx, item_id + catalog attributes (category filter)
BUNDLE_PURCHASED: Final = "purchased.parquet"  # user_idx, item_idx bought before the cutoff (+ ui_purchase_days,
# ui_days_since_last: the explorer's history)
# The test fold's history for real-time features (optional; components/realtime/features.py): daily.parquet
# and orders.parquet (HISTORY_DAILY, HISTORY_ORDERS), item_features.parquet, item_history.parquet
BUNDLE_HISTORY: Final = "history"
# {"sha256": ...} of model.tar.gz, beside it: what registration records (locally, and on SageMaker as the
# package's bundle_sha256 metadata through a property file of the bundle step)
BUNDLE_DIGEST_FILE: Final = "bundle_digest.json"
# Optional (real-time candidates, components/realtime/candidates.py; with BUNDLE_HISTORY): every item's
# co-occurrence neighbours as the candidates step fitted them (item_idx, neighbour_idx, similarity); manifest
# key "realtime" says how the batch made candidates.
BUNDLE_ITEM_NEIGHBOURS: Final = "item_neighbours.parquet"
NEIGHBOUR_IDX: Final = "neighbour_idx"
SIMILARITY: Final = "similarity"
ITEM_CATEGORY: Final = "category"  # catalog attribute the serving `category=` filter reads, if present
# A categorical feature's value when unknown (CatBoost cannot take a NULL category); the ETL writes it, the
# trainer and every scorer map an empty field to it.
MISSING_CATEGORY: Final = "__missing__"

# TIFU-KNN pair features (components/candidates/tifu.py writes them, components/ranker/features.py reads them):
# the user's own decayed item frequency u[item] and the k nearest users' mean u[item]
TIFU_PAIR_COLUMNS: Final = ("x_tifu_own", "x_tifu_neighbours")
# itemknn's score of a candidate (components/candidates/itemknn.py writes it, components/ranker/features.py
# reads it): sum over the user's items of weight x BM25 item-item similarity
ITEMKNN_PAIR_COLUMN: Final = "x_itemknn_score"
