"""Read-side queries over the store: actions (filtered, keyset-paged), one action with its history,
files (filtered, keyset-paged) and a file's line errors.

Plain functions over `ingest.tables` taking an open connection (`Store.read()`), shared by the web
console and the impact-compatible API so both list the same rows the same way. Every function takes
the campaigns the caller may see (`campaigns=None`: all, for operators); a row outside them is
simply not found, which the callers turn into a 404.

Pagination is by keyset, never OFFSET and never a COUNT(*) over a campaign: a page is the rows after
a cursor in (sort column, id) order, one row more is read to tell whether another page follows.
"""

from ingest.queries.actions import (
    action_campaign,
    action_history,
    action_ids_matching,
    count_actions_upto,
    get_action,
    iter_actions,
    last_job_run,
    list_actions,
    locking_soon,
    page_query,
)
from ingest.queries.files import (
    file_stats,
    get_file,
    line_errors,
    list_files,
    result_errors,
    spool_path,
)
from ingest.queries.numbered import (
    UpdateRow,
    Window,
    last_update,
    page_action_updates,
    page_actions,
    page_files,
)
from ingest.queries.types import (
    ACTION_SORTS,
    FILE_STATUSES,
    MAX_PAGE,
    ActionDetail,
    ActionFilter,
    ActionItem,
    ActionRow,
    FileFilter,
    FileRow,
    HistoryEntry,
    LineError,
    Page,
    decode_cursor,
    encode_cursor,
)

__all__ = [
    "ACTION_SORTS",
    "FILE_STATUSES",
    "MAX_PAGE",
    "ActionDetail",
    "ActionFilter",
    "ActionItem",
    "ActionRow",
    "FileFilter",
    "FileRow",
    "HistoryEntry",
    "LineError",
    "Page",
    "UpdateRow",
    "Window",
    "action_campaign",
    "action_history",
    "action_ids_matching",
    "count_actions_upto",
    "decode_cursor",
    "encode_cursor",
    "file_stats",
    "get_action",
    "get_file",
    "iter_actions",
    "last_job_run",
    "last_update",
    "line_errors",
    "list_actions",
    "list_files",
    "locking_soon",
    "page_action_updates",
    "page_actions",
    "page_files",
    "page_query",
    "result_errors",
    "spool_path",
]
