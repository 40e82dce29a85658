"""Dense 0-based int32 indices for user and item ids.

Deterministic: the index is the rank of the id string in sorted order (Spark compares strings by code
point, like Python's sorted()), so the same set of ids always gets the same indices, wherever it runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def build_id_map(id_frames: list[DataFrame], id_column: str, idx_column: str) -> DataFrame:
    """(id_column, idx_column) over the distinct union of the single-column frames ``id_frames``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    ids = id_frames[0].toDF(id_column)
    for other in id_frames[1:]:
        ids = ids.union(other.toDF(id_column))
    ids = ids.filter(sf.col(id_column).isNotNull()).distinct()
    # One global sort: an id map is small next to the events (ids are a fraction of rows), and a single
    # ordered partition is what makes row_number dense and deterministic.
    rank = sf.row_number().over(Window.orderBy(sf.col(id_column))) - 1
    return ids.select(id_column, rank.cast("int").alias(idx_column))
