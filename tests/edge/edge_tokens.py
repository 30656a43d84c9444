"""Hostile and honest lane tokens for the edge tests, made with the real JOSE library.

``attack_tokens`` is build step 5's list (issue 11): every entry must mean baseline at an edge,
never an error. Each data plane's test runs the same list through its own verifier (PyJWT in the
sidecar, Envoy's jwt_authn).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lane_router._token import SigningKey, generate_key, load_signing_key, mint

__all__ = ["Keys", "attack_tokens", "make_keys"]


@dataclass(frozen=True)
class Keys:
    """A JWKS file with two keys (``a`` current, ``b`` the rotation) and an outsider key."""

    a: SigningKey
    b: SigningKey
    outsider: SigningKey
    jwks: dict[str, object]
    jwks_path: Path
    jwks_a_only: dict[str, object]


def make_keys(tmp: Path) -> Keys:
    priv_a, pub_a = generate_key("ES256", "key-a")
    priv_b, pub_b = generate_key("EdDSA", "key-b")
    priv_x, _ = generate_key("ES256", "key-a")  # same kid, not in the JWKS: a forger's key
    jwks = {"keys": [pub_a, pub_b]}
    path = tmp / "jwks.json"
    path.write_text(json.dumps(jwks))
    return Keys(
        load_signing_key(priv_a),
        load_signing_key(priv_b),
        load_signing_key(priv_x),
        jwks,
        path,
        {"keys": [pub_a]},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def attack_tokens(keys: Keys, lane: str = "feature-a") -> dict[str, str]:
    """Name -> a token naming ``lane`` that must not select it."""
    now = int(time.time())
    good = mint(keys.a, lane, 3600)
    head, _body, sig = good.split(".")
    claims = {
        "lane": lane,
        "iat": now,
        "exp": now + 3600,
        "iss": "traffic-lanes",
        "aud": "lanes-edge",
    }
    body = _b64(json.dumps(claims).encode())
    # HS256 keyed with the public key's PEM: the classic key-confusion forgery. PyJWT refuses
    # to HMAC with a PEM public key, so the attacker's signature is computed with hmac here.
    public_pem = keys.a.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-a"}).encode())
    hs_sig = _b64(hmac.new(public_pem, f"{hs_head}.{body}".encode(), hashlib.sha256).digest())
    none_head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "key-a"}).encode())
    p384 = ec.generate_private_key(ec.SECP384R1())
    tampered = _b64(json.dumps({**claims, "lane": "hotfix"}).encode())
    return {
        "expired": mint(keys.a, lane, 60, now=now - 7200),
        "not-yet-valid": mint(keys.a, lane, 7200, not_before=now + 3600),
        "wrong-aud": mint(keys.a, lane, 3600, audience="someone-else"),
        "wrong-iss": mint(keys.a, lane, 3600, issuer="mallory"),
        "wrong-key": mint(keys.outsider, lane, 3600),
        "unknown-kid": mint(SigningKey("key-z", "ES256", keys.outsider.key), lane, 3600),
        "alg-none": f"{none_head}.{body}.",
        "hs256-public-key": f"{hs_head}.{body}.{hs_sig}",
        "es384-same-kid": jwt.encode(claims, p384, algorithm="ES384", headers={"kid": "key-a"}),
        "tampered-lane": f"{head}.{tampered}.{sig}",
        "truncated": good[:-10],
        "garbage": "not.a.token",
        "huge-100kb": good + "A" * 100_000,
        "bad-lane-claim": jwt.encode(
            {**claims, "lane": "Feature A"}, keys.a.key, algorithm="ES256", headers={"kid": "key-a"}
        ),
    }
