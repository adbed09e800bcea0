"""Access control of the bridge: the bearer token, the loopback-only mode and the body limit."""

import hmac
import json
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from center_pipeline.config import ConfigError

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
MIN_TOKEN_LENGTH = 16

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="BRIDGE_API_TOKEN; required when the bridge has a token set.",
)


def check_token(token: str | None) -> None:
    """Reject a token too short to resist guessing; the message never shows the token.

    Raises:
        ConfigError: the token has fewer than 16 characters.
    """
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"Invalid configuration: BRIDGE_API_TOKEN has {len(token)} characters; use at least "
            f"{MIN_TOKEN_LENGTH}. Example: BRIDGE_API_TOKEN=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )


def check_bind_host(host: str, token: str | None) -> None:
    """Allow binding `host` only with a token, unless it is 127.0.0.1.

    Raises:
        ConfigError: no token is set and `host` is not 127.0.0.1.
    """
    if token is None and host != LOOPBACK_HOST:
        raise ConfigError(
            f"Invalid configuration: BRIDGE_API_TOKEN is not set, so the bridge listens on "
            f"{LOOPBACK_HOST} only, not on {host}. Set BRIDGE_API_TOKEN or use --host "
            f"{LOOPBACK_HOST}."
        )


def access_check(token: str | None):
    """A FastAPI dependency that guards every endpoint except the docs.

    With a token, a request needs `Authorization: Bearer <token>`, else it gets 401 before
    any lookup, so a 401 never reveals whether an id exists. Without a token, only requests
    that reached the server on 127.0.0.1 are answered, even when uvicorn was started by hand
    on another address.
    """
    expected = token.encode() if token is not None else None

    def check_access(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> None:
        if expected is None:
            server = request.scope.get("server")
            if not server or server[0] != LOOPBACK_HOST:
                raise HTTPException(
                    status_code=status.HTTP_403_FORBIDDEN,
                    detail=f"BRIDGE_API_TOKEN is not set, so the bridge answers on "
                    f"{LOOPBACK_HOST} only.",
                )
            _reject_foreign_browser_request(request)
            return
        presented = credentials.credentials.encode() if credentials is not None else b""
        # compare_digest takes the same time wherever the first differing byte is.
        if not hmac.compare_digest(presented, expected):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Missing or invalid bearer token.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check_access


_LOCAL_HOST_NAMES = {LOOPBACK_HOST, "localhost"}


def _reject_foreign_browser_request(request: Request) -> None:
    """Reject requests that a web page on another site, or DNS rebinding, sent to the bridge.

    Without a token, loopback is the only protection, and a browser on the same machine
    would otherwise carry any page's POST to it. Such requests show a foreign `Host` or
    `Origin` header.
    """
    host = (request.headers.get("host") or "").rsplit(":", 1)[0]
    origin = request.headers.get("origin")
    origin_host = origin.split("://", 1)[-1].rsplit(":", 1)[0] if origin else None
    if host not in _LOCAL_HOST_NAMES or (
        origin is not None and origin_host not in _LOCAL_HOST_NAMES
    ):
        logger.warning("Rejected a request with Host %r and Origin %r", host, origin)
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="Without BRIDGE_API_TOKEN the bridge answers only requests addressed to "
            "127.0.0.1 or localhost from no other site. Set BRIDGE_API_TOKEN to allow others.",
        )


class BodySizeLimit:
    """ASGI middleware that responds with 413 to a request body larger than `max_bytes`.

    The body is read into memory up to the limit before the app sees it, so chunked bodies
    without a Content-Length header are limited too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "Invalid Content-Length header.")
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, 413, self._too_large())
                return

        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large())
                return
            chunks.append(chunk)
            more_body = message.get("more_body", False)

        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes (BRIDGE_MAX_BODY_BYTES)."


async def _send_error(send: Send, status_code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
