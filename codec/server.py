"""The codec server: the Web UI (and the `temporal` CLI's `--codec-endpoint`) send it payloads to
show or to send, and it answers them decoded or encoded, per Temporal's codec-server protocol.

    POST /codec/decode   {"payloads": [{"metadata": {...}, "data": "<base64>"}]}  -> same shape
    POST /codec/encode   same

It is mounted on the audit API (api/app.py). A payload it cannot decode is answered with a small
JSON marker saying why ("erased", "unreadable"), never an error: one unreadable payload must not
blank a whole history page. Requests carry the namespace in `X-Namespace`; another namespace than
ours is refused. Who may call it: bearer tokens of role `hr` (the UI forwards the user's token
when its "pass access token" setting is on), or anyone who reaches it when `CODEC_WITHOUT_TOKEN`
is set (the dev stack only, whose UI has no sign-in).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.
import secrets
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from codec.encryption import EncryptingCodec, UnreadablePayload, encrypt, unreadable_marker
from codec.keys import DataKeys, KeySetupError, UnknownDataKey

MAX_BODY_BYTES = 4 * 1024 * 1024  # Temporal's own limit per payload is 2 MiB


def create_codec_app(keys: DataKeys, *, namespace: str, tokens: Mapping[str, str],
                     ui_origins: list[str], without_token: bool) -> FastAPI:
    app = FastAPI(title="Codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware, allow_origins=ui_origins, allow_credentials=True, allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
    )
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                         x_namespace: Annotated[str | None, Header()] = None) -> None:
        if x_namespace is not None and x_namespace != namespace:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"this codec server serves namespace '{namespace}' only")
        if without_token:
            return
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an HR bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        given = credentials.credentials.encode()  # bytes: compare_digest refuses non-ASCII text
        role = next((r for t, r in tokens.items() if secrets.compare_digest(t.encode(), given)), None)
        if role is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token",
                                headers={"WWW-Authenticate": "Bearer"})
        if role != "hr":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only HR may read or write payloads")

    async def read_payloads(request: Request) -> Payloads:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"at most {MAX_BODY_BYTES // (1024 * 1024)} MiB per request")
        try:
            return json_format.Parse(body or b"{}", Payloads())
        except json_format.ParseError:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                'the body must be {"payloads": [{"metadata": {...}, "data": "<base64>"}]}') from None

    def answer(payloads: Payloads) -> JSONResponse:
        return JSONResponse(json_format.MessageToDict(payloads))

    codec = EncryptingCodec(keys)

    @app.post("/decode", dependencies=[Depends(authorised)])
    async def decode(request: Request) -> JSONResponse:
        received = await read_payloads(request)
        decoded = Payloads()
        for payload in received.payloads:
            try:
                decoded.payloads.append(await codec.decode_one(payload))
            except (UnknownDataKey, UnreadablePayload, KeySetupError) as exc:
                decoded.payloads.append(unreadable_marker(str(exc)))
        return answer(decoded)

    @app.post("/encode", dependencies=[Depends(authorised)])
    async def encode(request: Request) -> JSONResponse:
        received = await read_payloads(request)
        if not received.payloads:
            return answer(received)
        # The UI does not say which workflow the input is for: a key of its own, found later in
        # that workflow's history and destroyed with it (codec/shredding.py).
        key = await keys.typed_key()
        return answer(Payloads(payloads=[encrypt(key, payload) for payload in received.payloads]))

    @app.exception_handler(HTTPException)
    async def in_words(_request: Request, exc: HTTPException) -> JSONResponse:
        body: dict[str, Any] = {"message": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    return app
