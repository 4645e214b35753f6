"""The ASGI layer that enforces bearer tokens (when configured) and writes the access audit, in
front of every server: the three KServe servers, the feedback API and the CDS Hooks service.
The rules live in hospital_mlops/security/api_access.py."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hospital_mlops.security.api_access import PUBLIC_PATHS, AccessLog, ApiTokens, prediction_ids

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNAUDITED = frozenset({"/metrics"})  # Prometheus scrapes: no prediction in them
CLIENT_STATE = "hmlops_client"
MAX_CAPTURE = 2_000_000  # answers are capped well below this; ids past it are not looked for


class AccessControl:
    def __init__(
        self,
        app: ASGIApp,
        service: str,
        tokens: ApiTokens | None,
        log: AccessLog | None,
        public: frozenset[str] = PUBLIC_PATHS,
        protected_prefixes: tuple[str, ...] = ("/",),
    ) -> None:
        self.app, self.service, self.tokens, self.log = app, service, tokens, log
        self.public, self.protected_prefixes = public, protected_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in self.public:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        who = "anonymous"
        if self.tokens is not None and path.startswith(self.protected_prefixes):
            headers = dict(scope.get("headers") or [])
            client = self.tokens.client(headers.get(b"authorization", b"").decode("latin-1"))
            if client is None:
                await _unauthorized(send)
                self._record("unauthenticated", method, path, 401, [])
                return
            who = client
        status = 500
        captured: list[bytes] = []
        # the answer is read for prediction ids only when it is audited
        audited = self.log is not None and path not in UNAUDITED
        size = 0 if audited else MAX_CAPTURE

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and size < MAX_CAPTURE:
                chunk = bytes(message.get("body", b""))
                captured.append(chunk)
                size += len(chunk)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if audited:
                # an app that authenticates its callers itself names them (the CDS service: the
                # EHR's JWT issuer)
                who = str((scope.get("state") or {}).get(CLIENT_STATE, who))
                self._record(who, method, path, status, prediction_ids(path, b"".join(captured)))

    def _record(self, who: str, method: str, path: str, status: int, ids: list[str]) -> None:
        if self.log is not None:
            self.log.record(
                who=who, service=self.service, method=method, path=path, status=status, ids=ids
            )


async def _unauthorized(send: Send) -> None:
    error = {"errors": [{"field": "authorization", "message": "a valid bearer token is required"}]}
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b'Bearer realm="hospital-mlops"'),
        ],
    })  # fmt: skip
    await send(
        {"type": "http.response.body", "body": json.dumps({"error": json.dumps(error)}).encode()}
    )
