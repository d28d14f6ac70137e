"""Logging filters: device tokens travel in URL paths, so every log line is scrubbed of them."""

import logging
import re

# /api/v1/<TOKEN>/telemetry and /ws/v1/<TOKEN>/telemetry (ThingsBoard puts the token in the path).
_TOKEN_PATH = re.compile(r"(/(?:api|ws)/v1/)(?!devices/)[^/\s\"?]+(/telemetry)")


def redact(text: str) -> str:
    return _TOKEN_PATH.sub(r"\1***\2", text)


class RedactTokensFilter(logging.Filter):
    """Rewrites the formatted message so no device token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
