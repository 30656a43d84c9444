"""The sidecar as an edge (``--edge --jwks FILE``): strip client lane headers, then take the lane
from a verified lane token only (docs/design.md, "The edge").

Pure functions over the raw header bytes the parser hands over, plus :class:`Edge`, which holds
the current :class:`~lane_router._token.Verifier` (its cache of verified tokens) and the
counters ``/metrics`` shows. The request path calls :meth:`Edge.request_lane` once per request,
and only in edge mode; the JOSE library is imported only then.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from lane_router._edge_wire import (
    DEFAULT_COOKIE,
    DEFAULT_TOKEN_HEADER,
    DEFAULT_VERIFY_BUDGET,
    MAX_TOKEN_BYTES,
)

if TYPE_CHECKING:
    from lane_router._sidecar._decide import RequestHead
    from lane_router._token import Verdict, Verifier

__all__ = [
    "H_EDGE",
    "H_EDGE_BAGGAGE",
    "H_EDGE_COOKIE",
    "H_EDGE_TOKEN",
    "OUTCOMES",
    "Edge",
    "EdgeConfigError",
    "strip_baggage_lane",
    "strip_cookie",
    "take_cookie",
    "token_from",
]

log = logging.getLogger("lanes.sidecar")

OUTCOMES: Final = ("valid", "expired", "invalid", "absent")
# Header kinds only an edge's table maps (``Edge.install``); all >= H_EDGE, so the request path
# tests one integer comparison, after every other kind, and only in edge mode.
H_EDGE: Final = 100
H_EDGE_BAGGAGE: Final = 100  # copied without its lane member
H_EDGE_TOKEN: Final = 101  # read for the token, never forwarded
H_EDGE_COOKIE: Final = 102  # read for the token, copied without its lane_token pair
_OWS: Final = b" \t"


def _strip(line: bytes, key: bytes, sep: bytes) -> bytes | None:
    if key not in line:
        return line
    kept = [m for m in line.split(sep) if m.partition(b"=")[0].strip(_OWS) != key]
    if len(kept) == line.count(sep) + 1:
        return line
    out = sep.join(kept).strip(_OWS)
    return out or None


def strip_baggage_lane(line: bytes, key: bytes) -> bytes | None:
    """``line`` without its ``key`` members (whatever their value); the other members keep
    their bytes. ``None`` when nothing is left; ``line`` itself when it holds no such member."""
    return _strip(line, key, b",")


def take_cookie(line: bytes, name: bytes) -> tuple[bytes | None, bytes | None]:
    """One pass over a ``Cookie`` line (RFC 6265 ``name=value; name=value``): the line without
    its ``name`` pairs (``None`` when nothing is left; ``line`` itself when it holds none), and
    the first such pair's value, spaces and quotes trimmed (``b""`` if empty, ``None`` if no
    pair). Pair names are compared after trimming spaces/tabs, as the Envoy strip step does."""
    if name not in line:
        return line, None
    kept: list[bytes] = []
    value: bytes | None = None
    for pair in line.split(b";"):
        key, _, val = pair.partition(b"=")
        if key.strip(_OWS) != name:
            kept.append(pair)
        elif value is None:
            value = val.strip(_OWS).strip(b'"')
    if value is None:
        return line, None
    out = b";".join(kept).strip(_OWS)
    return out or None, value


def strip_cookie(line: bytes, name: bytes) -> bytes | None:
    """A ``Cookie`` line without its ``name`` pairs (the lane token is a credential: it never
    reaches the upstream); the other pairs keep their bytes. ``None`` when nothing is left;
    ``line`` itself when it holds no such pair. Same rule as the Envoy strip step's."""
    return take_cookie(line, name)[0]


def token_from(
    headers: Iterable[bytes] | None, cookies: Iterable[bytes] | None, cookie: bytes
) -> bytes | None:
    """The lane token: the first non-empty token header line, else the value of the first
    ``cookie`` pair over the ``Cookie`` lines (see :func:`take_cookie`)."""
    if headers:
        for value in headers:
            value = value.strip(_OWS)
            if value:
                return value
    if cookies:
        for line in cookies:
            token = take_cookie(line, cookie)[1]
            if token is not None:
                return token or None
    return None


class EdgeConfigError(ValueError):
    """The JWKS cannot be used at start: the sidecar must not run as an edge that verifies
    nothing (every QA request would silently be baseline)."""


class Edge:
    """Edge state: the verifier of the current JWKS and the counters."""

    def __init__(
        self,
        jwks_path: str | Path,
        *,
        issuer: str,
        audience: str,
        leeway: float,
        verify_budget: int = DEFAULT_VERIFY_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(jwks_path)
        self._options = {"issuer": issuer, "audience": audience, "leeway": leeway}
        # Signature checks per second (0: unlimited): a flood of distinct well-formed tokens
        # with a known kid costs one check each; past the budget they are treated as absent.
        self._budget = verify_budget
        self._clock = clock
        self._second = -1
        self._checks = 0
        self._warn_at = -math.inf
        self.over_budget = 0
        self.cookie = DEFAULT_COOKIE.encode("ascii")
        self.tokens = dict.fromkeys(OUTCOMES, 0)
        self.stripped = 0  # client lane header lines (x-lane lines, baggage lane members) removed
        self.reload_failures = 0
        self.key = b"lane"  # the topology's baggage key, set by install()
        # Raw token bytes -> (lane as bytes, until when): the hit path of a QA session skips
        # decoding and the verifier. Bounded; emptied with every new JWKS.
        self._fast: dict[bytes, tuple[bytes, float]] = {}
        self._stat_key = self._stat()
        try:
            self.verifier = self._load()
        except (ValueError, OSError) as exc:
            raise EdgeConfigError(f"--jwks {self.path}: {exc}") from None

    def _load(self) -> Verifier:
        # The JOSE library loads only in edge mode: a plain sidecar never pays for it.
        from lane_router._token import Verifier, load_jwks

        keyset = load_jwks(self.path.read_bytes(), source=str(self.path))
        allow = self._allow if self._budget > 0 else None
        return Verifier(keyset, allow=allow, **self._options)  # type: ignore[arg-type]

    def _allow(self) -> bool:
        """One signature check from this second's budget; past it the token counts as absent,
        counted, and a WARNING at most once a minute."""
        now = self._clock()
        second = int(now)
        if second != self._second:
            self._second, self._checks = second, 0
        if self._checks < self._budget:
            self._checks += 1
            return True
        self.over_budget += 1
        if now >= self._warn_at:
            self._warn_at = now + 60.0
            log.warning(
                "edge: more than %d lane tokens to verify in one second; the rest are treated "
                "as absent (baseline) - a flood of forged tokens? Raise --token-verify-budget "
                "if these are real testers",
                self._budget,
            )
        return False

    def install(self, special: dict[bytes, int], baggage_key: str) -> None:
        """Map the edge's header kinds into a route table's ``special`` (every table build)."""
        special[b"baggage"] = H_EDGE_BAGGAGE
        special[DEFAULT_TOKEN_HEADER.encode("ascii")] = H_EDGE_TOKEN
        special[b"cookie"] = H_EDGE_COOKIE
        self.key = baggage_key.encode("ascii")

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def changed(self) -> bool:
        """The JWKS file changed since the last load (polled with the topology file)."""
        return self._stat() != self._stat_key

    def reload(self) -> bool:
        """Load the JWKS again (with the topology). A bad file keeps the old keys, is counted
        and logged with the fix."""
        self._stat_key = self._stat()
        try:
            self.verifier = self._load()
            self._fast = {}
        except (ValueError, OSError) as exc:  # JwksError is a ValueError
            self.reload_failures += 1
            log.warning("edge: keeping the previous JWKS: %s (fix the file and reload)", exc)
            return False
        return True

    def header(self, req: RequestHead, kind: int, name: bytes, value: bytes) -> None:
        """One field line of an edge kind (the parser's callback, edge mode only)."""
        if kind == H_EDGE_BAGGAGE:
            kept = strip_baggage_lane(value, self.key)
            if kept is not value:
                self.stripped += 1
            if kept is not None:
                req.headers += (name, b": ", kept, b"\r\n")
        elif kind == H_EDGE_TOKEN:  # never forwarded
            if req.tokens is None:
                req.tokens = [value]
            else:
                req.tokens.append(value)
        else:  # H_EDGE_COOKIE: read for the token, forwarded without the token's pair
            kept, token = take_cookie(value, self.cookie)
            if kept is not None:
                req.headers += (name, b": ", kept, b"\r\n")
            if token is not None and req.cookies is None:
                req.cookies = [token]  # the first pair's value decides, as in token_from()

    def settle(self, req: RequestHead) -> None:
        """Replace the head's lane with the token's: the client's ``x-lane`` lines are dropped
        (counted; its baggage lane was already stripped), a verified token's lane is set."""
        if req.lanes:
            self.stripped += len(req.lanes)
        req.baggage = None
        raw = token_from(req.tokens, None, self.cookie)
        if raw is None and req.cookies is not None:
            raw = req.cookies[0] or None
        if raw is not None:  # header or cookie: a QA session's token skips the verifier
            hit = self._fast.get(raw)
            if hit is not None and time.time() < hit[1]:
                self.tokens["valid"] += 1
                req.lanes = [hit[0]]
                return
        verdict = self._verdict(raw)
        if verdict.lane is None:
            req.lanes = None
            return
        lane = verdict.lane.encode("ascii")
        req.lanes = [lane]
        if raw is not None:
            fast = self._fast
            if len(fast) >= 1024:
                del fast[next(iter(fast))]  # oldest first
            fast[raw] = (lane, verdict.expires)

    def metrics(self) -> str:
        """Prometheus text for ``/metrics``."""
        out = [
            "# HELP lanes_edge_tokens_total Lane tokens at the edge by outcome.",
            "# TYPE lanes_edge_tokens_total counter",
        ]
        out += [f'lanes_edge_tokens_total{{outcome="{k}"}} {v}' for k, v in self.tokens.items()]
        for name, help_, value in (
            (
                "lanes_edge_stripped_total",
                "Client lane headers removed at the edge (x-lane lines, baggage lane members).",
                self.stripped,
            ),
            (
                "lanes_edge_verify_budget_exceeded_total",
                "Lane tokens not verified (treated as absent): over --token-verify-budget.",
                self.over_budget,
            ),
            (
                "lanes_edge_jwks_reload_failures_total",
                "JWKS loads refused (previous keys kept).",
                self.reload_failures,
            ),
        ):
            out += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(out) + "\n"

    def lane(self, token: bytes | None) -> str | None:
        """The lane of a verified token, else ``None`` (baseline); counts the outcome."""
        return self._verdict(token).lane

    def _verdict(self, token: bytes | None) -> Verdict:
        if token is not None and len(token) > MAX_TOKEN_BYTES:
            from lane_router._token import Verdict

            self.tokens["invalid"] += 1
            return Verdict("invalid", reason=f"longer than {MAX_TOKEN_BYTES} bytes")
        verdict = self.verifier.verify(token)
        self.tokens[verdict.outcome] += 1
        return verdict
