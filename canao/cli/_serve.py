"""The service and the plot: serve, plot."""

from __future__ import annotations

from pathlib import Path

import click

from canao.cli._base import (
    STORAGE_HELP,
    _storage,
    cli,
)
from canao.errors import CanaoError


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token-file.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the bearer token every request but /api/health must carry.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("canao_service"), show_default=True,
              help="The service's folder: artifacts, exports and worker logs.")
@click.option("--heartbeat-s", type=click.IntRange(min=1), default=30, show_default=True,
              help="--heartbeat-s of the workers the service starts.")
@click.option("--grace-s", type=click.IntRange(min=2), default=300, show_default=True,
              help="--grace-s of the workers the service starts.")
def serve(host: str, port: int, storage: str | None, token_file: Path | None, data_dir: Path,
          heartbeat_s: int, grace_s: int) -> None:
    """Serve the HTTP API and the Pareto page over the study database."""
    from canao import service
    from canao.db import open_storage

    token = service.read_token(token_file) if token_file else None
    service.check_bind(host, token)
    if grace_s <= heartbeat_s:
        raise CanaoError(f"--grace-s ({grace_s}) must be longer than --heartbeat-s ({heartbeat_s})")
    url = _storage(storage)
    open_storage(url, must_exist=False)  # an unreachable database fails here, not per request
    data_dir.mkdir(parents=True, exist_ok=True)
    service.serve(service.ServiceConfig(storage=url, data_dir=data_dir.resolve(), host=host,
                                        port=port, token=token, heartbeat_s=heartbeat_s,
                                        grace_s=grace_s))


@cli.command()
@click.option("--study", "study_name", required=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.png or FILE.html.")
def plot(study_name: str, storage: str | None, out: Path) -> None:
    """Write the study's trials and Pareto front (accuracy, latency, memory) as PNG or HTML."""
    from canao import study as st
    from canao.service import write_plot

    n = write_plot(st.load(study_name, _storage(storage)), out)
    click.echo(f"wrote {out}: {n} finished trial(s)")
