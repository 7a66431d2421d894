"""The impact-compatible submission routes: API submissions and (every channel's) file ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response

from channels.impact_openapi import (
    BATCH,
    FILE_PAGE_SIZE,
    PAGE,
    SID,
    SUBMISSION_PAGE_SIZE,
    WHEN,
    Q,
    add_route,
)
from channels.impact_shapes import (
    ApiSubmission,
    ApiSubmissionPage,
    ErrorDetailPage,
    FtpFileSubmission,
    FtpFileSubmissionPage,
)

if TYPE_CHECKING:
    from channels.impact_api import ImpactApi
    from channels.impact_reads import ImpactReads


def mount_file_submissions(app: FastAPI, api: ImpactApi, reads: ImpactReads) -> None:
    """GET …/FTPFileSubmissions, one of them, and its ErrorDetails."""
    route = api.guarded

    async def list_files(
        request: Request, sid: SID, CampaignId: Q = None, SubmissionDateStart: WHEN = None,
        SubmissionDateEnd: WHEN = None, CompletedDateStart: WHEN = None,
        CompletedDateEnd: WHEN = None, Page: PAGE = None, PageSize: FILE_PAGE_SIZE = None,
    ) -> Response:  # fmt: skip
        return await route(request, sid, reads.files)

    async def get_file(request: Request, sid: SID, batch_id: BATCH) -> Response:
        return await route(request, sid, reads.file, batch_id=batch_id)

    async def get_errors(
        request: Request, sid: SID, batch_id: BATCH, Page: PAGE = None,
        PageSize: FILE_PAGE_SIZE = None,
    ) -> Response:  # fmt: skip
        return await route(request, sid, reads.error_details, batch_id=batch_id)

    add_route(app, "GET", "/FTPFileSubmissions", list_files, FtpFileSubmissionPage,
              "List file submissions (every channel)")  # fmt: skip
    add_route(app, "GET", "/FTPFileSubmissions/{batch_id}", get_file, FtpFileSubmission,
              "A file submission")  # fmt: skip
    add_route(app, "GET", "/FTPFileSubmissions/{batch_id}/ErrorDetails", get_errors,
              ErrorDetailPage, "A file submission's line errors")  # fmt: skip


def mount_api_submissions(app: FastAPI, api: ImpactApi) -> None:
    """GET …/APISubmissions and …/APISubmissions/{BatchId} (the queued PUT/DELETE requests)."""
    route = api.guarded

    async def list_submissions(
        request: Request, sid: SID, Page: PAGE = None,
        PageSize: SUBMISSION_PAGE_SIZE = None,
    ) -> Response:  # fmt: skip
        return await route(request, sid, api.submissions_page)

    async def get_submission(request: Request, sid: SID, batch_id: BATCH) -> Response:
        return await route(request, sid, api.submission, batch_id=batch_id)

    add_route(app, "GET", "/APISubmissions", list_submissions, ApiSubmissionPage,
              "List API submissions")  # fmt: skip
    add_route(app, "GET", "/APISubmissions/{batch_id}", get_submission, ApiSubmission,
              "An API submission")  # fmt: skip
