"""What the service tells its operators: Prometheus metrics and one JSON object per log line on stderr.

Owns: the metric names (automation relies on them) and the log record's shape; every log message is passed through
the configuration's secret redaction. Must not: log a query string (links carry signatures, callbacks carry codes),
a header, a token or a code.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Collection
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "JsonLines", "Metrics", "log_to_stderr"]

LOGGER = "reconciler.service"
MIN_REDACTED = 6


class Metrics:
    """The service's metrics, in a registry of their own (several services may run in one test process)."""

    def __init__(self, pending_links: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.completed = Counter(
            "reconciler_authorizations_completed", "Sign-ins completed through links", registry=self.registry
        )
        self.pending = Gauge("reconciler_pending_links", "Pending authorizations with a usable link", registry=self.registry)
        self.pending.set_function(pending_links)
        self.refresh = Counter(
            "reconciler_refresh", "Background token refreshes by outcome", ["outcome"], registry=self.registry
        )
        self.token_reads = Counter("reconciler_token_reads", "Tokens handed out by the token API", registry=self.registry)
        self.webhooks = Counter(
            "reconciler_webhook_deliveries", "Webhook delivery attempts by outcome", ["outcome"], registry=self.registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, message, and the record's `fields` (extra={"fields": {...}}), with
    every secret value of the configuration replaced."""

    def __init__(self, secrets: Collection[str] = ()) -> None:
        super().__init__()
        # Values too short to be a real secret would mangle every line they occur in; the configuration's secrets
        # are much longer (a value this short is redacted nowhere else either).
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_REDACTED), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__  # the type only: an exception's text may quote a request
        return json.dumps({key: self._redacted(value) for key, value in entry.items()}, default=str)

    def _redacted(self, value: Any) -> Any:
        """`value` with every secret value replaced, before it is serialised (escaping would hide a secret)."""
        if isinstance(value, dict):
            return {k: self._redacted(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redacted(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def log_to_stderr(secrets: Collection[str], level: int = logging.INFO, stream: TextIO | None = None) -> logging.Logger:
    """The service's logger (and uvicorn's error logger) writing JSON lines to stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLines(secrets))
    for name in (LOGGER, "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger(LOGGER)
