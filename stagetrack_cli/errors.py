"""Exit codes (documented in docs/cli.md) and the error every command ends with when it fails."""
from __future__ import annotations

OK = 0
RUN_FAILED = 1  # `runs watch`: the run ended in FAILURE, CANCELLED or TIMED_OUT
USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
AUTH = 3  # 401 / 403: no, a bad or revoked token, or a token without the scope
NOT_FOUND = 4  # 404
CONFLICT = 5  # 409: illegal transition, lost race, already decided, paused pipeline...
INVALID = 6  # 400 / 413 / 422: the server refused the request as malformed
UNAVAILABLE = 7  # cannot reach the server, 429, 5xx, an answer that is not the API's: try again
WATCH_TIMEOUT = 8  # `runs watch --timeout`: the run was still going when the time was up


class CliError(Exception):
    """A failure to report: a message, what to do about it, an exit code and, when the server
    answered, its status and error body."""

    def __init__(self, message: str, exit_code: int, hint: str = "", status: int | None = None,
                 code: str | None = None, body: dict | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint
        self.status = status
        self.code = code
        self.body = body
        self.retry_after = retry_after  # seconds, from a 429's Retry-After

    def as_json(self) -> dict:
        """The server's error body when there is one, else one in the API's shape."""
        if self.body and isinstance(self.body.get("error"), dict):
            return self.body
        return {"error": {"code": self.code or "cli_error", "message": self.message}}
