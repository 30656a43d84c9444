"""``lanes ui``: the lane map, a call graph per lane and the canary page, on live figures.

Figures come from the sidecars' ``/metrics`` (:class:`ScrapeSource`) or a Prometheus server's
HTTP API (:class:`PrometheusSource`); the PromQL is :func:`queries`, shared with the recording
rules and the Grafana dashboard in ``k8s/monitoring/``. The topology is a file or, in a cluster,
the controller's view of a namespace (:class:`ModelView`).
"""

from lane_router.ui._app import STATIC, UiConfig, make_app, run_forever, serve_ui
from lane_router.ui._cluster import ModelView, View
from lane_router.ui._figures import (
    QUERIES,
    Figures,
    FigureSource,
    PrometheusSource,
    Row,
    ScrapeSource,
    histogram_quantile,
    queries,
)
from lane_router.ui._views import canary_view, graph_view, map_view, trace_link

__all__ = [
    "QUERIES",
    "STATIC",
    "FigureSource",
    "Figures",
    "ModelView",
    "PrometheusSource",
    "Row",
    "ScrapeSource",
    "UiConfig",
    "View",
    "canary_view",
    "graph_view",
    "histogram_quantile",
    "make_app",
    "map_view",
    "queries",
    "run_forever",
    "serve_ui",
    "trace_link",
]
