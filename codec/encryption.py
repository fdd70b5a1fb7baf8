"""The payload codec: every payload the project sends to Temporal is encrypted before it leaves.

Each payload is serialised whole (metadata and data), encrypted with AES-256-GCM under the data
key of the workflow it belongs to, and replaced by a payload that says only how it was encrypted
and under which key:

    metadata  encoding=binary/encrypted, encryption-scheme=aes256gcm/v1, encryption-key-id=<uuid>
    data      12-byte nonce || ciphertext and tag (the key id is the associated data)

The workflow comes from the SDK's serialisation context (the workflow's own payloads, its
activities', its updates' and queries'), so a pair's history is readable only with that pair's
key, and destroying the key erases the whole history. Decoding needs no context: the key id
travels with the payload, which lets the codec server decode for the Web UI.

A payload whose key was destroyed decodes to a small JSON marker (`ERASED_MARKER`), never to an
error: the Web UI shows it, and nothing breaks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverter,
    PayloadCodec,
    PayloadConverter,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import FailureError

from codec.keys import NONCE_BYTES, DataKey, DataKeys, ShreddedKey, UnknownDataKey
from workflows.payloads import PayloadConverter as ProjectPayloadConverter

ENCODING = b"binary/encrypted"
SCHEME = b"aes256gcm/v1"
KEY_ID = "encryption-key-id"
SCHEME_KEY = "encryption-scheme"
ERASED_KEY = "personal-data-erased"


class UnreadablePayload(Exception):
    """An encrypted payload that does not decrypt: altered, or made for another database."""


def erased_marker(key: ShreddedKey) -> Payload:
    """What a payload under a destroyed key decodes to."""
    body = {"erased": f"personal data erased on {key.shredded_at:%Y-%m-%d}: its key was destroyed"}
    return Payload(metadata={"encoding": b"json/plain", ERASED_KEY: key.key_id.encode()},
                   data=json.dumps(body).encode())


def unreadable_marker(reason: str) -> Payload:
    """For the Web UI only: a payload it cannot be shown, said in words rather than an error."""
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"unreadable": reason}).encode())


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


class EncryptingCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM under the data key of the workflow in context (see the module's text)."""

    def __init__(self, keys: DataKeys, workflow_id: str | None = None) -> None:
        self._keys = keys
        self._workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> EncryptingCodec:
        workflow_id = None
        if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext):
            workflow_id = context.workflow_id
        return EncryptingCodec(self._keys, workflow_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not payloads:
            return []
        key = await self._keys.for_workflow(self._workflow_id)
        if isinstance(key, ShreddedKey):  # cannot be: shredded keys leave their workflow id
            raise UnreadablePayload(f"the key of workflow {self._workflow_id} was destroyed")
        return [encrypt(key, payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            try:
                decoded.append(await self.decode_one(payload))
            except (UnknownDataKey, UnreadablePayload) as exc:
                # Never an error here: a workflow task failing on its own input retries for ever.
                # The marker reaches the door, which refuses it in words (a start, an update).
                decoded.append(unreadable_marker(str(exc)))
        return decoded

    async def decode_one(self, payload: Payload) -> Payload:
        if not is_encrypted(payload):
            return payload  # written before encryption, or by a client without the codec
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        if payload.metadata.get(SCHEME_KEY) != SCHEME:
            raise UnreadablePayload(f"a payload under key {key_id[:40]} uses an unknown scheme")
        key = await self._keys.by_id(key_id)
        if isinstance(key, ShreddedKey):
            return erased_marker(key)
        return decrypt(key, payload)


def encrypt(key: DataKey, payload: Payload) -> Payload:
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.cipher.encrypt(nonce, payload.SerializeToString(), key.key_id.encode())
    return Payload(metadata={"encoding": ENCODING, SCHEME_KEY: SCHEME, KEY_ID: key.key_id.encode()},
                   data=nonce + sealed)


def decrypt(key: DataKey, payload: Payload) -> Payload:
    if len(payload.data) < NONCE_BYTES + 16:  # a nonce and a tag at least
        raise UnreadablePayload(f"a payload under key {key.key_id} is too short to be ours: it was altered")
    try:
        clear = key.cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key.key_id.encode())
    except InvalidTag:
        raise UnreadablePayload(f"a payload under key {key.key_id} does not decrypt: it was altered") from None
    decoded = Payload()
    decoded.ParseFromString(clear)
    return decoded


class FailureConverter(DefaultFailureConverter):
    """Stack traces always, and the messages of unexpected errors, go into the failure's encoded
    (so encrypted) attributes: a library's error or a bug may quote the input. The refusals we
    raise on purpose (Temporal's `FailureError`s: our `PairError`s, `DATA_REFUSED`, timeouts and
    cancellations) are written never to quote input, and keep their message in clear: HR reads
    them in the UI and the CLI, and a query's refusal, which Temporal passes as a plain string,
    would otherwise arrive as "Encoded failure"."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter,
                   failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        if not failure.message and not failure.stack_trace:
            return
        hidden = payload_converter.to_payloads([{"message": failure.message, "stack_trace": failure.stack_trace}])[0]
        failure.encoded_attributes.CopyFrom(hidden)
        failure.stack_trace = ""
        if not isinstance(exception, FailureError):
            failure.message = "Encoded failure"


def encrypting_data_converter(keys: DataKeys) -> DataConverter:
    """The project's converter (workflows/payloads.py) with the codec and `FailureConverter`."""
    return DataConverter(payload_converter_class=ProjectPayloadConverter, payload_codec=EncryptingCodec(keys),
                         failure_converter_class=FailureConverter)


def key_ids_in(message: Any, found: set[str] | None = None) -> set[str]:
    """The data keys named by every payload inside a protobuf message (a history event, a whole
    history): the keys of inputs typed in the Web UI are found this way."""
    found = set() if found is None else found
    if isinstance(message, Payload):
        if is_encrypted(message):
            found.add(message.metadata.get(KEY_ID, b"").decode("ascii", "replace"))
        return found
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            key_ids_in(value, found)
        elif field.message_type.GetOptions().map_entry:
            for item in value.values():
                if isinstance(item, Message):
                    key_ids_in(item, found)
        else:  # a repeated message field
            for item in value:
                key_ids_in(item, found)
    return found


__all__ = ["EncryptingCodec", "UnknownDataKey", "UnreadablePayload", "encrypting_data_converter",
           "erased_marker", "key_ids_in", "unreadable_marker"]
