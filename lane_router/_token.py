"""Lane tokens: a signed, verifiable lane selection for the edge (docs/design.md, "The edge").

A lane token is a JWT (RFC 7519) signed ES256 (default) or EdDSA, whose header ``kid`` names a
key of a JWKS and whose claims are ``lane``, ``exp``, ``iat``, ``iss`` and ``aud``. All crypto
and JOSE parsing is PyJWT's (with ``cryptography``); this module only picks keys, pins each
key's algorithm (so ``alg: none`` and HS256-with-the-public-key cannot verify), and classifies
the outcome. Verification never raises on input from the network: a token is ``valid``,
``expired``, ``invalid`` or ``absent``, and only ``valid`` carries a lane.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from lane_router._edge_wire import (
    ALGORITHMS,
    DEFAULT_AUDIENCE,
    DEFAULT_COOKIE,
    DEFAULT_ISSUER,
    DEFAULT_LEEWAY,
    DEFAULT_TOKEN_HEADER,
    MAX_TOKEN_BYTES,
)
from lanes_sdk.wire import valid_lane

__all__ = [
    "ALGORITHMS",
    "DEFAULT_AUDIENCE",
    "DEFAULT_COOKIE",
    "DEFAULT_ISSUER",
    "DEFAULT_LEEWAY",
    "DEFAULT_TOKEN_HEADER",
    "MAX_TOKEN_BYTES",
    "JwksError",
    "KeySet",
    "SigningKey",
    "Verdict",
    "Verifier",
    "generate_key",
    "load_jwks",
    "load_signing_key",
    "mint",
    "parse_ttl",
]

_MAX_JWKS_BYTES: Final = 256 * 1024
_MAX_KEYS: Final = 32
_KID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PUBLIC_FIELDS: Final = ("kty", "crv", "x", "y")


class JwksError(ValueError):
    """A JWKS or key file that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the ``kid``/algorithm its tokens carry."""

    kid: str
    algorithm: str
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class KeySet:
    """Public keys by ``kid``, each with its one algorithm."""

    keys: Mapping[str, jwt.PyJWK]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one token: ``outcome`` is ``valid|expired|invalid|absent``; ``lane`` is
    set only when valid; ``reason`` says why not (for logs and ``lanes token verify``)."""

    outcome: str
    lane: str | None = None
    reason: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires: float = 0.0  # valid only: until when (exp + leeway) the verdict holds
    lasting: bool = True  # a refusal that holds as long as the key set does


ABSENT: Final = Verdict("absent", reason="no token")
OVER_BUDGET: Final = Verdict(
    "absent", reason="not verified: over the verification budget", lasting=False
)


def _algorithm_of(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise JwksError(f"EC curve {key.curve.name} is not P-256 (ES256)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise JwksError(f"unsupported key type {type(key).__name__}: use ES256 (P-256) or EdDSA")


def generate_key(algorithm: str = "ES256", kid: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new key pair: the private key as a JWK JSON text (holding ``kid`` and ``alg``, so
    ``mint`` needs nothing else) and the public JWK to add to the JWKS."""
    if algorithm not in ALGORITHMS:
        raise JwksError(f"algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if kid is None:
        kid = f"lanes-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"
    elif not _KID_RE.fullmatch(kid):
        raise JwksError(f"kid {kid!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    if algorithm == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private, as_dict=True)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private, as_dict=True)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    public: dict[str, Any] = {k: jwk[k] for k in (*_PUBLIC_FIELDS, "kid", "alg", "use") if k in jwk}
    return json.dumps(jwk, indent=2, sort_keys=True) + "\n", public


def load_signing_key(text: str, *, kid: str | None = None, source: str = "key") -> SigningKey:
    """A private key from a JWK JSON text (as written by ``generate_key``) or a PEM (then
    ``kid`` is required). ``kid`` overrides the one in the JWK."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key: Any = serialization.load_pem_private_key(text.encode(), password=None)
            if kid is None:
                raise JwksError(f"{source}: a PEM key holds no kid: pass --kid")
        else:
            data = json.loads(text)
            if not isinstance(data, dict) or "d" not in data:
                raise JwksError(f"{source}: not a private JWK (no 'd'); is it the JWKS?")
            key = jwt.PyJWK(data).key
            kid = kid or data.get("kid")
            if not kid:
                raise JwksError(f"{source}: the JWK has no kid: pass --kid")
    except JwksError:
        raise
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise JwksError(f"{source}: not a private key ({exc})") from None
    if not _KID_RE.fullmatch(kid):
        raise JwksError(f"{source}: kid {kid!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    return SigningKey(kid, _algorithm_of(key), key)


def mint(
    key: SigningKey,
    lane: str,
    ttl: float,
    *,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
    not_before: float | None = None,
) -> str:
    """A signed lane token valid for ``ttl`` seconds from ``now``."""
    if valid_lane(lane) != lane:
        raise ValueError(f"lane {lane!r} is not a valid lane name (an RFC 1123 DNS label)")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "lane": lane,
        "iat": issued,
        "exp": issued + int(ttl),
        "iss": issuer,
        "aud": audience,
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    return jwt.encode(claims, key.key, algorithm=key.algorithm, headers={"kid": key.kid})


def load_jwks(text: str | bytes, *, source: str = "JWKS") -> KeySet:
    """Public keys from a JWKS document. Refuses private members (a JWKS is published), keys
    without ``kid``, duplicate ``kid``s and algorithms other than ES256/EdDSA, naming each."""
    if len(text) > _MAX_JWKS_BYTES:
        raise JwksError(f"{source}: larger than {_MAX_JWKS_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"{source}: not JSON ({exc})") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise JwksError(f'{source}: expected {{"keys": [...]}} with at least one key')
    if len(entries) > _MAX_KEYS:
        raise JwksError(f"{source}: {len(entries)} keys, at most {_MAX_KEYS}")
    keys: dict[str, jwt.PyJWK] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: keys[{i}]"
        if not isinstance(entry, dict):
            raise JwksError(f"{where}: not an object")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise JwksError(f"{where}: kid missing or not 1-64 of A-Z a-z 0-9 . _ -")
        if kid in keys:
            raise JwksError(f"{where}: duplicate kid {kid!r}")
        if "d" in entry:
            raise JwksError(f"{where} ({kid}): holds a private key ('d'); publish public keys only")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise JwksError(f"{where} ({kid}): {exc}") from None
        if jwk.algorithm_name not in ALGORITHMS:
            raise JwksError(
                f"{where} ({kid}): algorithm {jwk.algorithm_name}: use {' or '.join(ALGORITHMS)}"
            )
        keys[kid] = jwk
    return KeySet(keys)


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``8h`` or ``7d`` -> seconds (positive)."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"ttl {text!r}: use a positive number with s, m, h or d (e.g. 8h)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class Verifier:
    """Verifies lane tokens against one key set, with a bounded cache of tokens that verified.

    A QA session sends the same token on every request: the first costs one signature check,
    the next ones a dict lookup and an ``exp`` comparison. The cache is per key set: a reload
    builds a new ``Verifier``, so a removed key stops verifying at once.

    Refusals that cannot change while the key set stands (expired, bad signature, unknown kid,
    wrong aud/iss, malformed) are remembered too, in a separate bounded map: a stale QA cookie
    sent with every asset request costs one signature check, not one per request. A token not
    yet valid (``nbf``) is never remembered. Distinct bad tokens still cost one check each.
    """

    __slots__ = (
        "_allow",
        "_audience",
        "_cache",
        "_cache_size",
        "_issuer",
        "_leeway",
        "_refused",
        "keyset",
    )

    def __init__(
        self,
        keyset: KeySet,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway: float = DEFAULT_LEEWAY,
        cache_size: int = 1024,
        allow: Callable[[], bool] | None = None,
    ) -> None:
        self.keyset = keyset
        # Asked before each signature check (a known kid, not cached): False = the token is
        # treated as absent, not remembered (the edge's verification budget).
        self._allow = allow
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._cache_size = cache_size
        self._cache: dict[str, tuple[str, float]] = {}
        self._refused: dict[str, Verdict] = {}

    def verify(self, token: str | bytes | None, now: float | None = None) -> Verdict:
        """Classify ``token``; never raises."""
        if not token:
            return ABSENT
        if len(token) > MAX_TOKEN_BYTES:
            return Verdict("invalid", reason=f"longer than {MAX_TOKEN_BYTES} bytes")
        if isinstance(token, bytes | bytearray):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                return Verdict("invalid", reason="not ASCII")
        token = token.strip(" \t")
        clock = time.time() if now is None else now
        hit = self._cache.get(token)
        if hit is not None:
            lane, exp = hit
            if clock < exp + self._leeway:
                return Verdict("valid", lane, expires=exp + self._leeway)
            del self._cache[token]
            return Verdict("expired", reason="token has expired")
        refused = self._refused.get(token)
        if refused is not None:
            return refused
        verdict = self._verify(token, clock)
        if verdict.outcome == "valid":
            _put(self._cache, token, (verdict.lane, float(verdict.claims["exp"])), self._cache_size)
        elif verdict.lasting and now is None:  # a test clock must not pin a verdict
            _put(self._refused, token, verdict, self._cache_size)
        return verdict

    def _verify(self, token: str, clock: float) -> Verdict:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            jwk = self.keyset.keys.get(kid) if isinstance(kid, str) else None
            if jwk is None:
                return Verdict("invalid", reason=f"kid {kid!r} is not in the JWKS")
            if self._allow is not None and not self._allow():
                return OVER_BUDGET
            claims = jwt.decode(
                token,
                jwk,
                algorithms=[jwk.algorithm_name],  # the key's, never the token's
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "lane"]},
            )
        except jwt.ExpiredSignatureError:
            return Verdict("expired", reason="token has expired")
        except jwt.ImmatureSignatureError as exc:  # may become valid: never remembered
            return Verdict("invalid", reason=str(exc), lasting=False)
        except jwt.PyJWTError as exc:
            return Verdict("invalid", reason=str(exc) or type(exc).__name__)
        except (ValueError, TypeError, RecursionError) as exc:  # defensive: hostile input
            return Verdict("invalid", reason=f"{type(exc).__name__}: {exc}")
        # PyJWT checks exp against its own clock; a caller-provided clock (tests, cache) wins.
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or clock >= exp + self._leeway:
            return Verdict("expired", reason="token has expired")
        lane = valid_lane(claims.get("lane"))
        if lane is None or lane != claims.get("lane"):
            return Verdict("invalid", reason="claim 'lane' is not a valid lane name")
        return Verdict("valid", lane, claims=claims, expires=exp + self._leeway)


def _put(cache: dict[str, Any], key: str, value: Any, size: int) -> None:
    """Insert, evicting the oldest entry first when full (dicts keep insertion order)."""
    if len(cache) >= size:
        del cache[next(iter(cache))]
    cache[key] = value
