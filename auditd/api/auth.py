"""Bearer-token auth for the API's state-changing routes.

Fail closed: with no token configured (AUDITD_API_TOKEN unset) those routes are disabled (403),
never open. Tokens are compared in constant time. Read-only routes and /metrics need no token;
webhooks authenticate by their own signatures (auditd/registry/webhook.py).
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="AUDITD_API_TOKEN")


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    settings = getattr(request.app.state, "settings", None)
    token = settings.api_token.get_secret_value() if settings is not None and settings.api_token else None
    if not token:
        raise HTTPException(403, "state-changing API calls are disabled: set AUDITD_API_TOKEN")
    given = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
