"""The sidecar as an edge (``--edge --jwks FILE``): strip client lane headers, then take the lane
from a verified lane token only (docs/design.md, "The edge").

Pure functions over the raw header bytes the parser hands over, plus :class:`Edge`, which holds
the current :class:`~lane_router._token.Verifier` (its cache of verified tokens) and the
counters ``/metrics`` shows. The request path calls :meth:`Edge.lane` once per request, and only
in edge mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from lane_router._token import (
    DEFAULT_COOKIE,
    MAX_TOKEN_BYTES,
    JwksError,
    Verifier,
    load_jwks,
)

__all__ = ["OUTCOMES", "Edge", "strip_baggage_lane", "token_from"]

log = logging.getLogger("lane_router.sidecar")

OUTCOMES: Final = ("valid", "expired", "invalid", "absent")
_OWS: Final = b" \t"


def strip_baggage_lane(line: bytes, key: bytes) -> bytes | None:
    """``line`` without its ``key`` members (whatever their value); the other members keep
    their bytes. ``None`` when nothing is left; ``line`` itself when it holds no such member."""
    if key not in line:
        return line
    kept = [m for m in line.split(b",") if m.partition(b"=")[0].strip(_OWS) != key]
    if len(kept) == line.count(b",") + 1:
        return line
    out = b",".join(kept).strip(_OWS)
    return out or None


def token_from(
    headers: Iterable[bytes] | None, cookies: Iterable[bytes] | None, cookie: bytes
) -> bytes | None:
    """The lane token: the first non-empty token header line, else the first ``cookie=``
    pair over the ``Cookie`` lines (RFC 6265 ``name=value; name=value``)."""
    if headers:
        for value in headers:
            value = value.strip(_OWS)
            if value:
                return value
    if cookies:
        prefix = cookie + b"="
        for line in cookies:
            if prefix not in line:
                continue
            for pair in line.split(b";"):
                pair = pair.strip(_OWS)
                if pair.startswith(prefix):
                    value = pair[len(prefix) :].strip(b'"')
                    return value or None
    return None


class Edge:
    """Edge state: the verifier of the current JWKS and the counters."""

    def __init__(
        self, jwks_path: str | Path, *, issuer: str, audience: str, leeway: float
    ) -> None:
        self.path = Path(jwks_path)
        self._options = {"issuer": issuer, "audience": audience, "leeway": leeway}
        self.cookie = DEFAULT_COOKIE.encode("ascii")
        self.tokens = dict.fromkeys(OUTCOMES, 0)
        self.stripped = 0  # client lane header lines (x-lane lines, baggage lane members) removed
        self.reload_failures = 0
        # Raises JwksError at start: a sidecar that cannot verify anything must not start as an
        # edge (every QA request would silently be baseline).
        self.verifier = self._load()

    def _load(self) -> Verifier:
        keyset = load_jwks(self.path.read_bytes(), source=str(self.path))
        return Verifier(keyset, **self._options)  # type: ignore[arg-type]

    def reload(self) -> bool:
        """Load the JWKS again (with the topology). A bad file keeps the old keys, is counted
        and logged with the fix."""
        try:
            self.verifier = self._load()
        except (JwksError, OSError) as exc:
            self.reload_failures += 1
            log.warning("edge: keeping the previous JWKS: %s (fix the file and reload)", exc)
            return False
        return True

    def lane(self, token: bytes | None) -> str | None:
        """The lane of a verified token, else ``None`` (baseline); counts the outcome."""
        if token is not None and len(token) > MAX_TOKEN_BYTES:
            self.tokens["invalid"] += 1
            return None
        verdict = self.verifier.verify(token)
        self.tokens[verdict.outcome] += 1
        return verdict.lane
