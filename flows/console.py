"""Console logging of the ``alignx`` command: one line per record on screen, everything in a log file.

Lives beside the flows (it configures Prefect's handlers), so the library never imports Prefect.
"""

from __future__ import annotations

import logging
from pathlib import Path


class FirstLineFormatter(logging.Formatter):
    """Wraps a console formatter: the record's first line only, never its traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            text = self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        first, _, rest = text.partition("\n")
        return first + (" [...]" if rest.strip() else "")


def quiet_console(log_file: Path) -> None:
    """Console log lines stay one line each; everything, tracebacks included, goes to ``log_file``."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's own handlers first; its console handlers are then tamed here

    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        if logger.handlers or logger is logging.getLogger():
            stream_handlers = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                               and not isinstance(h, logging.FileHandler)]
            for handler in stream_handlers:
                handler.setFormatter(FirstLineFormatter(handler.formatter))
            if logger is logging.getLogger() or not logger.propagate:
                logger.addHandler(to_file)
