"""What every `accord` command shares: its settings, read from the environment once per command."""

from __future__ import annotations

import click

from broker.config import Settings

_SETTINGS = "accord.settings"


def current_settings() -> Settings:
    """The running command's settings (one Settings per command, kept on the root click context)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return Settings()
    meta = ctx.find_root().meta
    found = meta.get(_SETTINGS)
    if not isinstance(found, Settings):
        found = meta[_SETTINGS] = Settings()
    return found


def serve_scrape_port(settings: Settings) -> None:
    """Prometheus /metrics without a token on ACCORD_METRICS_HOST:ACCORD_METRICS_PORT, if set (a daemon thread)."""
    if settings.metrics_port is None:
        return
    from broker.adapters.metrics import serve_metrics

    server = serve_metrics(settings.metrics_port, settings.metrics_host)
    click.echo(f"metrics: http://{settings.metrics_host}:{server.server_port}/metrics", err=True)
