"""``LaneWSGIMiddleware``: the lane for WSGI handlers (Flask, Django, plain WSGI), including
comma-joined repeated header lines and routes excluded from OpenTelemetry tracing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage

import lanes_sdk
from lanes_sdk import LaneWSGIMiddleware, current_lane


def _seen_app(seen: list[object]):
    def app(environ, start_response):
        seen.append((current_lane(), baggage.get_baggage("user")))
        start_response("200 OK", [("content-type", "text/plain")])

        def body() -> Iterator[bytes]:  # streamed: runs after the app returned
            seen.append(current_lane())
            yield b"ok"

        return body()

    return app


def _call(app, **headers: str) -> bytes:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": None}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    result = app(environ, lambda status, headers, exc_info=None: None)
    try:
        return b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()


@pytest.mark.parametrize(
    ("headers", "lane"),
    [
        ({"x_lane": "feature-a"}, "feature-a"),
        ({"x_lane": "feature-a,feature-a"}, "feature-a"),  # Werkzeug joins two lines so
        ({"x_lane": "Nope, feature-b"}, "feature-b"),  # first valid one, as the data planes
        ({"baggage": "user=42,lane=feature-c;ttl=60"}, "feature-c"),
        ({"x_lane": "feature-a", "baggage": "lane=feature-b"}, "feature-a"),
        ({"x_lane": "Nope"}, None),
        ({}, None),
    ],
)
def test_wsgi_middleware_attaches_the_lane(headers, lane):
    seen: list[object] = []
    assert _call(LaneWSGIMiddleware(_seen_app(seen)), **headers) == b"ok"
    user = "42" if "user=42" in headers.get("baggage", "") else None
    assert seen == [(lane, user), lane]
    assert current_lane() is None  # nothing leaks out of the request


def test_wsgi_middleware_custom_header():
    seen: list[object] = []

    def app(environ, start_response):
        seen.append(current_lane(baggage_key="team.lane"))
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = LaneWSGIMiddleware(app, header="X-Team", baggage_key="team.lane")
    assert _call(wrapped, x_team="feature-t", baggage="lane=no") == b"ok"
    assert _call(wrapped, baggage="lane=no,team.lane=feature-u") == b"ok"
    assert seen == ["feature-t", "feature-u"]


def test_flask_route_excluded_from_tracing_still_has_the_lane():
    flask = pytest.importorskip("flask")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = flask.Flask("excluded")

    @app.get("/health")
    def health():
        return {"lane": lanes_sdk.current_lane()}

    # As OTEL_PYTHON_FLASK_EXCLUDED_URLS=health does (that one is read at import).
    FlaskInstrumentor().instrument_app(app, excluded_urls="health")
    try:
        client = app.test_client()
        assert client.get("/health", headers={"x-lane": "feature-x"}).json == {"lane": None}
        app.wsgi_app = LaneWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        got = client.get("/health", headers=[("x-lane", "feature-x"), ("x-lane", "feature-x")])
        assert got.json == {"lane": "feature-x"}
    finally:
        FlaskInstrumentor().uninstrument_app(app)
