"""Match: resolve every valid row of a file to an action of the campaign, or a Contract error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection

from ingest import bulk
from ingest.domain import EventTypeRule
from ingest.rules import ActionArrays
from ingest.sql import SqlAdapter


@dataclass(frozen=True)
class Matched:
    """One entry per file line (`lines`: first error, action position) and the actions."""

    lines: pd.DataFrame
    arrays: ActionArrays


def match(
    conn: Connection, sql: SqlAdapter, campaign_id: str, rows: pd.DataFrame, now: datetime
) -> Matched:
    """Load the actions the rows name and resolve each row to one (position -1: none)."""
    rules = bulk.event_types(conn)
    valid = rows["error_code"].isna().to_numpy()
    by_id = valid & rows["action_id"].notna().to_numpy()
    by_order = valid & ~by_id
    resets = bool((rows["reason"] == "RESET").any())
    statuses = bool(rows["customer_status"].notna().any())
    actions = bulk.load_actions(
        conn,
        sql,
        campaign_id,
        rows.loc[by_id, "action_id"],
        rows.loc[by_order, "order_id"],
        now,
        resets=resets,
        statuses=statuses,
        currencies=bool(rows["currency"].notna().any()),
    )
    pos = np.full(len(rows), -1, dtype=np.int64)
    code = rows["error_code"].to_numpy(dtype=object, na_value=None).copy()
    message = rows["error_message"].to_numpy(dtype=object, na_value=None).copy()
    if by_id.any():
        pos[by_id] = positions(rows.loc[by_id, "action_id"], actions["id"])
    if by_order.any():
        _match_orders(campaign_id, rows, by_order, actions, rules, pos, code, message)
    missing = valid & (pos < 0) & pd.isna(code)
    code[missing] = "ACTION_NOT_FOUND"
    message[missing] = "no such action in this campaign"
    items = bulk.load_items(conn, sql, _with_items(actions, pos))
    arrays = bulk.build_arrays(actions, items, rules, status_known=statuses or resets)
    return Matched(_line_table(rows, pos, code, message), arrays)


def _with_items(actions: pd.DataFrame, pos: np.ndarray) -> list[str]:
    """Ids of the matched actions that have items."""
    if not len(actions):
        return []
    has_items = actions["has_items"].to_numpy(dtype=bool)
    if not has_items.any():
        return []
    wanted = np.unique(pos[pos >= 0])
    ids: list[str] = actions["id"].to_numpy(dtype=object)[wanted[has_items[wanted]]].tolist()
    return ids


def positions(wanted: pd.Series, ids: pd.Series) -> np.ndarray:
    """Position of each wanted id among `ids`, -1 when absent (arrow's hash lookup: fast)."""
    if not len(ids):
        return np.full(len(wanted), -1, dtype=np.int64)
    found = pc.index_in(
        pa.array(wanted, type=pa.string(), from_pandas=True),
        value_set=pa.array(ids, type=pa.string(), from_pandas=True),
    )
    return np.asarray(pc.fill_null(found, -1), dtype=np.int64)


def _match_orders(
    campaign_id: str,
    rows: pd.DataFrame,
    by_order: np.ndarray,
    actions: pd.DataFrame,
    rules: dict[int, EventTypeRule],
    pos: np.ndarray,
    code: np.ndarray,
    message: np.ndarray,
) -> None:
    """Rows naming Oid + ActionTrackerId: the newest action of that order and event type."""
    tracker = rows["tracker"].to_numpy(dtype=np.int64, na_value=-1)
    known = np.array([tr in rules for tr in tracker.tolist()], dtype=bool)
    mine = np.array(
        [tr in rules and rules[tr].campaign_id == campaign_id for tr in tracker.tolist()],
        dtype=bool,
    )
    unknown, foreign = by_order & ~known, by_order & known & ~mine
    code[unknown], message[unknown] = "ACTIONTRACKER_NOT_FOUND", "no such ActionTrackerId"
    code[foreign] = "ACTIONTRACKER_CAMPAIGN_MISMATCH"
    message[foreign] = "the ActionTrackerId belongs to another campaign"
    ok = by_order & mine
    if not ok.any() or not len(actions):
        return
    index = pd.Index(actions["id"].to_numpy(dtype=object))
    newest = actions.sort_values(["event_at", "id"], ascending=False).drop_duplicates(
        ["order_id", "event_type_id"]
    )
    keys = pd.MultiIndex.from_arrays(
        [newest["order_id"].astype(object), newest["event_type_id"].astype(np.int64)]
    )
    want = pd.MultiIndex.from_arrays([rows.loc[ok, "order_id"].to_numpy(dtype=object), tracker[ok]])
    found = keys.get_indexer(want)
    ids = newest["id"].to_numpy(dtype=object)
    pos[ok] = np.where(found >= 0, index.get_indexer(ids[np.maximum(found, 0)]), -1)


def _line_table(
    rows: pd.DataFrame, pos: np.ndarray, code: np.ndarray, message: np.ndarray
) -> pd.DataFrame:
    """One entry per file line: the first error among its parts, and its action position."""
    frame = rows.assign(pos=pos, code=code, msg=message)
    frame["part"] = np.arange(len(frame))
    lines = frame.drop_duplicates("line", keep="first").set_index("line")
    first_err = frame[frame["code"].notna()].drop_duplicates("line").set_index("line")
    lines.loc[first_err.index, "code"] = first_err["code"]
    lines.loc[first_err.index, "msg"] = first_err["msg"]
    return lines.reset_index()
