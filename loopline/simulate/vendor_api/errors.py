"""The vendor's error answers: one JSON shape, ``{"error": code, "message": ...}``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ...}`` with the given status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Remember the status, machine-readable code, message and extra headers."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A JSON error body with a stable shape."""
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    return JSONResponse(status_code=status, content=body, headers=headers)
