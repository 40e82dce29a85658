"""The DATA_CONTRACT's event rules for one row, in plain Python: what ``POST /events`` checks before it
acknowledges an event, so an event the service accepts is an event the next ETL run accepts.

The reasons, their order, the timestamp pattern and the limits are defined here once; the ETL
(components/etl/validate.py) imports them. Only the parsing exists twice, because the ETL runs it as Spark
SQL over millions of rows and the service over one JSON object. ``tests/test_realtime_etl.py`` runs the
same rows through both (:func:`components.etl.validate.check_events` on a real Spark session) and asserts
the same reason and the same parsed values for every row; the Spark semantics mirrored are named below.

Not checked per row: ``duplicate`` (the online store's idempotency keys do it, see
components/realtime/intake.py) and ``unknown_item`` (the service knows the bundle's items, not the shop's
catalog; the ETL rejects such rows into rejected/events/ with that reason).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from components import schema as s

# Reasons, in check order. Documented here because the order decides which reason a row with several
# problems gets: structure first, then ids, time, type, amounts, catalog, and duplicates last (so only a
# row that is otherwise valid can be "a duplicate of an earlier row").
MALFORMED_ROW: Final = "malformed_row"  # CSV line with the wrong number of fields
INVALID_ENCODING: Final = "invalid_encoding"  # bytes that are not UTF-8 (stops the run, see step.py)
MISSING_USER_ID: Final = "missing_user_id"
MISSING_ITEM_ID: Final = "missing_item_id"
MISSING_TIMESTAMP: Final = "missing_timestamp"
UNPARSABLE_TIMESTAMP: Final = "unparsable_timestamp"
UNKNOWN_EVENT_TYPE: Final = "unknown_event_type"
UNPARSABLE_QUANTITY: Final = "unparsable_quantity"  # not a whole number
NON_POSITIVE_QUANTITY: Final = "non_positive_quantity"
UNPARSABLE_PRICE: Final = "unparsable_price"
NEGATIVE_PRICE: Final = "negative_price"
UNKNOWN_ITEM: Final = "unknown_item"  # strict catalog only
DUPLICATE: Final = "duplicate"  # same values as an earlier accepted-so-far row; the first is kept
MISSING_ID: Final = "missing_id"  # items/users
DUPLICATE_ID: Final = "duplicate_id"  # items/users: the first row of an id is kept

EVENT_CHECKS: Final = (MALFORMED_ROW, INVALID_ENCODING, MISSING_USER_ID, MISSING_ITEM_ID, MISSING_TIMESTAMP,
                       UNPARSABLE_TIMESTAMP, UNKNOWN_EVENT_TYPE, UNPARSABLE_QUANTITY, NON_POSITIVE_QUANTITY,
                       UNPARSABLE_PRICE, NEGATIVE_PRICE, UNKNOWN_ITEM, DUPLICATE)
ENTITY_CHECKS: Final = (MALFORMED_ROW, INVALID_ENCODING, MISSING_ID, DUPLICATE_ID)

# ISO-8601 date or date-time (T or space), optional fraction and offset; Spark's cast does the parsing
# and rejects impossible dates, the pattern keeps it from accepting bare years like "2024".
TIMESTAMP_PATTERN: Final = (r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
                            r"\s*(Z|[+-]\d{2}(:?\d{2})?)?$")
MAX_QUANTITY: Final = 2**31 - 1
REPLACEMENT_CHAR: Final = "\ufffd"  # what Spark's UTF-8 decoder leaves for bytes that are not UTF-8


# Java's regex \d and \s are ASCII-only; Python's are Unicode unless told.
_TIMESTAMP: Final = re.compile(TIMESTAMP_PATTERN, re.ASCII)
_PARTS: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*"
    r"(Z|([+-])(\d{2})(?::?(\d{2}))?)?$", re.ASCII)
# What java.lang.Double.parseDouble (Spark's string -> double cast) takes in decimal form: an optional
# sign, digits with an optional point, an exponent, and the float/double suffix Java allows (2d, 2f).
# Python's float() differs (it takes "1_000", rejects "2d"), hence the pattern.
_JAVA_DECIMAL: Final = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?$", re.ASCII)
_JAVA_HEX: Final = re.compile(r"^[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+[fFdD]?$")
_SPECIAL: Final = re.compile(r"^[+-]?(inf|infinity|nan)$", re.IGNORECASE)
MAX_OFFSET_HOURS: Final = 18  # java.time.ZoneOffset's range
# A field holding a line break would split the event log's CSV line (the ETL reads CSV line by line), so
# it is refused as the malformed row it would become there.
_LINE_BREAKS: Final = ("\n", "\r")


@dataclass(frozen=True)
class ParsedEvent:
    """An accepted event's parsed contract values (what the ETL's clean/events would hold)."""

    user_id: str
    item_id: str
    event_type: str
    timestamp_us: int  # microseconds since the epoch, UTC
    quantity: int
    price: float | None
    session_id: str | None


def raw_text(value: object) -> str | None:
    """A raw value as the CSV reader would hand it to the checks: text, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true/false: their text, as a CSV cell would hold it
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _clean(value: str | None) -> str | None:
    """Spark's trim() removes spaces only (not tabs or line breaks); empty means absent."""
    if value is None:
        return None
    trimmed = value.strip(" ")
    return trimmed or None


def java_double(text: str) -> float | None:
    """Spark's string -> double cast (non-ANSI): Java's parseDouble, its special literals, else NULL."""
    body = text.strip()  # parseDouble ignores leading and trailing whitespace (chars <= U+0020)
    if _JAVA_DECIMAL.match(body):
        return float(body.rstrip("fFdD"))
    if _JAVA_HEX.match(body):
        return float.fromhex(body.rstrip("fFdD"))
    if _SPECIAL.match(body):
        return float(body)
    return None


def parse_timestamp(text: str) -> int | None:
    """Microseconds since the epoch for the contract's ISO-8601 text (naive = UTC), or None when the ETL
    would find it unparsable: the pattern, then a real date and time (Spark's cast rejects 2024-02-30 and
    25:00); fractions past the microsecond are truncated, as Spark does."""
    if not _TIMESTAMP.match(text):
        return None
    match = _PARTS.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone, sign, off_h, off_m = match.groups()
    tz: timezone = UTC
    if zone and zone != "Z":
        hours, minutes = int(off_h), int(off_m or 0)
        if hours > MAX_OFFSET_HOURS or minutes > 59 or (hours == MAX_OFFSET_HOURS and minutes):
            return None
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if sign == "-" else delta)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          micros, tzinfo=tz)
    except ValueError:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta_us = moment - epoch
    return (delta_us.days * 86_400 + delta_us.seconds) * 1_000_000 + delta_us.microseconds


def check_event(row: dict[str, object]) -> tuple[str | None, ParsedEvent | None]:
    """(reason, None) for the first failing check in validate.EVENT_CHECKS' order, else (None, parsed).
    ``row`` maps contract column names to raw values (strings, or JSON numbers); extra keys are ignored."""
    if any(isinstance(v, list | dict) for v in row.values()):  # a CSV cell holds text, not structure
        return MALFORMED_ROW, None
    texts = {name: raw_text(row.get(name)) for name in (*s.REQUIRED_EVENT_COLUMNS, *s.OPTIONAL_EVENT_COLUMNS)}
    # Line breaks and undecodable bytes are checked on every column, extra ones too, as the ETL does.
    present = [t for t in map(raw_text, row.values()) if t is not None]
    if any(b in t for t in present for b in _LINE_BREAKS):
        return MALFORMED_ROW, None
    if any(REPLACEMENT_CHAR in t for t in present):
        return INVALID_ENCODING, None
    user_id, item_id = _clean(texts[s.USER_ID]), _clean(texts[s.ITEM_ID])
    if user_id is None:
        return MISSING_USER_ID, None
    if item_id is None:
        return MISSING_ITEM_ID, None
    ts_text = _clean(texts[s.TIMESTAMP])
    if ts_text is None:
        return MISSING_TIMESTAMP, None
    ts_us = parse_timestamp(ts_text)
    if ts_us is None:
        return UNPARSABLE_TIMESTAMP, None
    event_type = _clean(texts[s.EVENT_TYPE])
    event_type = event_type.lower() if event_type is not None else None
    if event_type not in s.EVENT_TYPES:
        return UNKNOWN_EVENT_TYPE, None
    assert event_type is not None
    qty_text = _clean(texts[s.QUANTITY])
    qty = 1.0 if qty_text is None else java_double(qty_text)
    if qty is None or math.isnan(qty) or abs(qty) > MAX_QUANTITY or qty != math.floor(qty):
        return UNPARSABLE_QUANTITY, None
    if qty <= 0:
        return NON_POSITIVE_QUANTITY, None
    price_text = _clean(texts[s.PRICE])
    price = None if price_text is None else java_double(price_text)
    if price_text is not None and (price is None or math.isnan(price) or math.isinf(price)):
        return UNPARSABLE_PRICE, None
    if price is not None and price < 0:
        return NEGATIVE_PRICE, None
    return None, ParsedEvent(user_id=user_id, item_id=item_id, event_type=event_type, timestamp_us=ts_us,
                             quantity=int(qty), price=price, session_id=_clean(texts[s.SESSION_ID]))
