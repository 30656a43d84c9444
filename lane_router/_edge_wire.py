"""Names and limits of lane tokens on the wire (docs/design.md, "The edge"): a leaf module, so the
renderers and ``lanes --help`` use them without importing the JOSE library."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALGORITHMS",
    "DEFAULT_AUDIENCE",
    "DEFAULT_COOKIE",
    "DEFAULT_ISSUER",
    "DEFAULT_LEEWAY",
    "DEFAULT_TOKEN_HEADER",
    "DEFAULT_VERIFY_BUDGET",
    "MAX_TOKEN_BYTES",
]

DEFAULT_ISSUER: Final = "traffic-lanes"
DEFAULT_AUDIENCE: Final = "lanes-edge"
DEFAULT_TOKEN_HEADER: Final = "x-lane-token"
DEFAULT_COOKIE: Final = "lane_token"
DEFAULT_LEEWAY: Final = 60  # seconds of clock skew for exp/nbf, as Envoy's jwt_authn default
# Asymmetric signatures only: a JWKS never holds a shared secret, so HMAC cannot be confused
# with a public key. The algorithm of each key is fixed by the key (P-256 -> ES256,
# Ed25519 -> EdDSA), never by the token's header.
ALGORITHMS: Final = ("ES256", "EdDSA")
# A lane token is ~300 bytes. Anything far larger is refused before it is parsed.
MAX_TOKEN_BYTES: Final = 4096
# Signature checks per second a sidecar edge spends on tokens it has not seen (cache misses with
# a known kid); past it they are treated as absent. Real QA sessions need a handful.
DEFAULT_VERIFY_BUDGET: Final = 200
