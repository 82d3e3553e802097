"""The sidecar's log lines: text, or JSON lines (`serve --log-format json`), one object a line
with `time`, `level`, `worker`, `logger`, `message` and, on every line about a stream, `stream`.

A line is about a stream when it is logged with `extra={"stream": id}` (the sidecar's own lines
about one) or by the thread running one of the stream's events in its plugin (the plugin's log,
its host calls): `STREAM_ON_THREAD`, on the event loop or on a slow lane's thread alike.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# The stream whose event runs in its plugin now, by thread id (StreamPlugins keeps it): a
# dict costs an event about half what a context variable's set and reset do.
STREAM_ON_THREAD: dict[int, int] = {}


def stream_of(record: logging.LogRecord) -> int | None:
    stream: int | None = getattr(record, "stream", None)
    if stream is None and record.thread is not None:
        stream = STREAM_ON_THREAD.get(record.thread)
    return stream


class JsonLines(logging.Formatter):
    """`worker`: the worker's index; None in the main process (which, with one worker, is
    the one serving the streams)."""

    def __init__(self, worker: int | None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "worker": self.worker,
            "logger": record.name,
            "message": record.getMessage(),
        }
        stream = stream_of(record)
        if stream is not None:
            line["stream"] = stream
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def worker_text(worker: int) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s %(levelname)s w{worker} %(name)s: %(message)s")


def log_to_stderr(level: str, formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
