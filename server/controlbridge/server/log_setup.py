"""Where the server's log lines go: plain text for a person, or one JSON object per line (`--log-json`).

Every server line (start-up, each connection, each job, shutdown) goes through the `controlbridge` logger, so
both formats carry the same lines. A record logged with `extra={"fields": {...}}` (the per-job line) has those
fields as keys of its JSON object, for a machine to read without parsing the sentence.
"""
import datetime
import json
import logging
import sys

LOGGER = "controlbridge"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(json_lines: bool = False, stream=None) -> logging.Logger:
    """Send the server's INFO lines and above to `stream` (stdout) in the chosen format; returns the logger."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False          # not printed twice by a root handler someone else set up
    return logger
