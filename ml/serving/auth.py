"""Bearer-token access for the API: `require_token` guards what writes, triggers work or reveals.

``LOOPLINE_API_TOKEN`` unset: nothing is required (the API binds to 127.0.0.1 by default, and
`ml.serving.app.serve` warns when it is bound elsewhere without a token). Set: every endpoint
guarded by `require_token` answers 401 without ``Authorization: Bearer <token>``, and scoring
and recommendations too when ``LOOPLINE_API_TOKEN_REQUIRED_FOR_READS`` is true. ``/healthz``
is always open; ``/readyz`` says whether it is ready to anyone, and which versions it serves
(and the last refresh error) only to holders of the token.

Any router can use it (``APIRouter(dependencies=[Depends(require_token)])``): the settings
come from ``app.state.settings`` (set by `ml.serving.app.create_app`), else from the
environment.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from loopline.settings import Settings, get_settings

# auto_error=False: a missing header is our 401 with our message, not FastAPI's 403
_bearer = HTTPBearer(auto_error=False, description="LOOPLINE_API_TOKEN, when it is set")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def app_settings(request: Request) -> Settings:
    """The settings of the app serving `request` (the environment's if it has none)."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def token_ok(settings: Settings, given: str | None) -> bool:
    """Whether a request carrying the bearer token `given` may pass: no token configured
    (unset or empty), or `given` is it."""
    expected = settings.api_token.get_secret_value().encode() if settings.api_token else b""
    if not expected:
        return True
    # constant time: the token cannot be guessed a character at a time by timing
    return hmac.compare_digest((given or "").encode(), expected)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (None if another)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _refuse() -> HTTPException:
    return HTTPException(
        401,
        "missing or wrong bearer token: send `Authorization: Bearer <LOOPLINE_API_TOKEN>`",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_token(request: Request, credentials: Credentials) -> None:
    """Dependency: 401 unless the request carries the configured token (if one is set)."""
    given = credentials.credentials if credentials is not None else None
    if not token_ok(app_settings(request), given):
        raise _refuse()
