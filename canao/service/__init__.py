"""The search service: an HTTP API and a Pareto page over the study database (``canao serve``).

FastAPI and uvicorn (the ``service`` extra) are imported only when an app is made, so
``canao plot`` and the CLI stay light.
"""

from __future__ import annotations

from typing import Any

from canao.service._config import ServiceConfig, ServiceError, check_bind, is_loopback, read_token
from canao.service._plots import page_html, plot_points, write_plot

__all__ = ["ServiceConfig", "ServiceError", "check_bind", "create_app", "is_loopback",
           "page_html", "plot_points", "read_token", "serve", "write_plot"]


def create_app(config: ServiceConfig) -> Any:
    """The FastAPI application (see :mod:`canao.service._app`)."""
    try:
        from canao.service._app import create_app as make
    except ImportError as e:
        raise ServiceError(f"the service needs FastAPI and uvicorn ({e.name} is missing): "
                           "pip install -e '.[service]'") from e
    return make(config)


def serve(config: ServiceConfig) -> None:
    """Serve until interrupted; the workers the service started are stopped on the way out."""
    check_bind(config.host, config.token)
    app = create_app(config)
    import uvicorn

    uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                timeout_graceful_shutdown=10)
