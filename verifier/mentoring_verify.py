#!/usr/bin/env python3
"""Check a reverse-mentoring audit bundle without trusting anyone's database.

    python mentoring_verify.py BUNDLE.json [--public-key KEY.pem]

A bundle (written by `mentoring audit export pair ID`) holds one pair's events, each with its
proof of inclusion in the whole log, and a checkpoint: the log's size and Merkle root, signed with
Ed25519 by the log's operator. This file checks, with the Python standard library and the
`cryptography` package only (no PostgreSQL, nothing of the project):

1. the checkpoint's signature, by the public key you trust (given with --public-key, or the one
   in the bundle, whose fingerprint you then compare with the one you were given);
2. each event's leaf hash, recomputed from its fields (RFC 8785 canonical JSON, hash scheme v1);
3. each inclusion proof, up to the signed root (RFC 9162 Merkle tree);
4. the pair's per-stream hash chain (versions 1..n, each event naming the previous one's hash).

Exit code 0 when everything holds; 1 with the first failure named otherwise.

Hash scheme v1. leaf = SHA-256(0x00 || "mentoring-leaf-v1" || 0x0a || JCS(event)), where event
is the JSON object {position, transaction_id, stream_id, version, event_id, event_type,
schema_version, payload, metadata, recorded_at_us, prev_hash, hash} (hashes as lowercase hex);
node = SHA-256(0x01 || left || right), as RFC 9162. A checkpoint signs the UTF-8 text
"mentoring-checkpoint-v1\\n<size>\\n<root hex>\\n<signed_at ISO 8601>\\n".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import sys
from typing import Any

LEAF_PREFIX = b"\x00mentoring-leaf-v1\n"
NODE_PREFIX = b"\x01"
CHECKPOINT_HEADER = "mentoring-checkpoint-v1"


# --- RFC 8785: JSON Canonicalization Scheme ----------------------------------------------------

def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS): sorted keys (by UTF-16 code units), no whitespace, ES6 number form."""
    if _plain(value):  # no float, no big int, ASCII keys: the standard encoder writes JCS already
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _jcs(value).encode("utf-8")


def _plain(value: Any) -> bool:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**53
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return False  # floats (and anything else) take the careful path


def _jcs(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):  # JSON numbers are doubles (RFC 8785): big ints as ECMAScript writes them
        return str(value) if abs(value) < 2**53 else _es6_number(float(value))
    if isinstance(value, float):
        return _es6_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _es6_number(number: float) -> str:
    """ECMAScript's Number.prototype.toString, which RFC 8785 prescribes for numbers."""
    if math.isnan(number) or math.isinf(number):
        raise ValueError("NaN and Infinity are not JSON")
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 2**53:  # exact; beyond, the shortest digits below
        return str(int(number))
    text = repr(number)  # the shortest text that reads back the same, as ES6 asks
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text.removesuffix(".0")
    digits = mantissa.replace(".", "").replace("-", "").rstrip("0") or "0"
    sign = "-" if number < 0 else ""
    point = int(exponent) + 1  # where the decimal point goes after the first digit
    if 0 < point <= 21:
        return sign + (digits + "0" * (point - len(digits)) if point >= len(digits)
                       else digits[:point] + "." + digits[point:])
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    rest = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{'+' if point - 1 > 0 else '-'}{abs(point - 1)}"


# --- hashes and the Merkle tree (RFC 9162) -----------------------------------------------------

def leaf_hash(event: dict[str, Any]) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical_json(event)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162, 2.1.3.2: `leaf` is at `index` of the tree of `size` leaves whose root is `root`."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162, 2.1.4.2: the tree of `size2` leaves extends the tree of `size1` leaves."""
    if size1 > size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


# --- checkpoints ----------------------------------------------------------------------------

def checkpoint_text(size: int, root_hex: str, signed_at: str) -> bytes:
    return f"{CHECKPOINT_HEADER}\n{size}\n{root_hex}\n{signed_at}\n".encode()


def key_fingerprint(public_key_raw: bytes) -> str:
    return hashlib.sha256(public_key_raw).hexdigest()[:32]


def verify_checkpoint(checkpoint: dict[str, Any], public_key_raw: bytes) -> str | None:
    """None when the signature holds; else why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(public_key_raw)
        key.verify(base64.b64decode(checkpoint["signature"]),
                   checkpoint_text(checkpoint["size"], checkpoint["root"], checkpoint["signed_at"]))
    except InvalidSignature:
        return "the checkpoint's signature does not match its size, root and time under this key"
    except (KeyError, ValueError) as exc:
        return f"the checkpoint cannot be read: {exc}"
    return None


def public_key_from_pem(text: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    key = load_pem_public_key(text)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- a bundle ------------------------------------------------------------------------------

def verify_bundle(bundle: dict[str, Any], public_key_raw: bytes | None = None) -> list[str]:
    """Every failure found (empty: the bundle holds)."""
    try:
        return _verify_bundle(bundle, public_key_raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"the bundle is malformed: {type(exc).__name__} {exc}"]


def _verify_bundle(bundle: dict[str, Any], public_key_raw: bytes | None) -> list[str]:
    problems: list[str] = []
    checkpoint = bundle.get("checkpoint") or {}
    key = public_key_raw or bytes.fromhex(checkpoint.get("public_key", ""))
    if (why := verify_checkpoint(checkpoint, key)) is not None:
        return [why]
    root, size = bytes.fromhex(checkpoint["root"]), int(checkpoint["size"])
    previous_hash = "00" * 32
    for expected_version, entry in enumerate(bundle.get("events", []), start=1):
        event, where = entry["event"], f"event {entry['event'].get('event_id', '?')} (version {entry['event'].get('version')})"
        if event.get("stream_id") != bundle.get("stream_id"):
            problems.append(f"{where}: belongs to stream {event.get('stream_id')}, not {bundle.get('stream_id')}")
        if int(entry["leaf_index"]) < 0:
            problems.append(f"{where}: a negative leaf index")
            continue
        if event.get("version") != expected_version:
            problems.append(f"{where}: version {event.get('version')} where {expected_version} was due (an event is missing or extra)")
        if event.get("prev_hash") != previous_hash:
            problems.append(f"{where}: does not chain to the event before it in its stream")
        previous_hash = event.get("hash", "")
        leaf = leaf_hash(event)
        path = [bytes.fromhex(h) for h in entry["proof"]]
        if not verify_inclusion(int(entry["leaf_index"]), size, leaf, path, root):
            problems.append(f"{where}: not in the signed log (its content or its proof was changed)")
    if not bundle.get("events"):
        problems.append("the bundle holds no event")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="the bundle's JSON file")
    parser.add_argument("--public-key", help="the log operator's Ed25519 public key (PEM) you trust")
    args = parser.parse_args(argv)
    try:
        with open(args.bundle, encoding="utf-8") as source:
            bundle = json.load(source)
        key = None
        if args.public_key:
            with open(args.public_key, "rb") as source:
                key = public_key_from_pem(source.read())
    except (OSError, ValueError) as exc:
        print(f"cannot read the input: {exc}", file=sys.stderr)
        return 2
    problems = verify_bundle(bundle, key)
    checkpoint = bundle.get("checkpoint") or {}
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    used = key or bytes.fromhex(checkpoint["public_key"])
    # The tree proves each event is in the log; that none of the stream's later events was left
    # out of the bundle, it cannot: hence "versions 1 to n", not "all".
    print(f"OK versions 1 to {len(bundle['events'])} of {bundle.get('stream_id')} are in the log of "
          f"{checkpoint['size']} events signed at {checkpoint['signed_at']}, by key {key_fingerprint(used)}"
          + ("" if key else " (the bundle's own key: compare this fingerprint with the operator's)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
