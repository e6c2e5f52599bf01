"""Huawei CodeArts Build's wire format: its ids' pattern, its error body, its request bodies.

Pure (no chalice): api/codearts.py parses a request with these, calls the service and answers in
this shape. The job id itself is a function of the pipeline name shared with the store and the
service (domain/dialect_ids.py). The AK/SK request signature its SDKs send is api/aksk.py.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from ..domain.schemas import StrictModel

JOB_ID_PATTERN = r"^[A-Za-z0-9]{32}$"

# Error codes of the CodeArts error shape {"error_code", "error_msg"}, by HTTP status. Assigned by
# stagetrack in CodeArts Build's "CB.<8 digits>" form; the digits end with the status.
CODEARTS_ERROR_CODES = {
    400: "CB.00000400",
    401: "CB.00000401",
    403: "CB.00000403",
    404: "CB.00000404",
    405: "CB.00000405",
    409: "CB.00000409",
    413: "CB.00000413",
    415: "CB.00000415",
    429: "CB.00000429",
    500: "CB.00000500",
}


def codearts_error(status: int, message: str) -> dict:
    return {"error_code": CODEARTS_ERROR_CODES.get(status, CODEARTS_ERROR_CODES[500]), "error_msg": message}


class CodeArtsStopIn(StrictModel):
    """POST /v3/jobs/stop. Both are strings, as the CodeArts reference says."""

    job_id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
    build_no: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,11}$")]


class CodeArtsStopV1In(StrictModel):
    """POST /v1/job/{job_id}/stop's optional body: the build number, an integer in the v1
    reference (the SDK sends it as the query parameter build_no instead)."""

    build_no: Annotated[int, Field(ge=1, le=999_999_999_999)] | None = None


class CodeArtsEmptyIn(StrictModel):
    """POST /v3/jobs/{job_id}/{build_no}/stop takes no body; ``{}`` is tolerated, nothing more."""
