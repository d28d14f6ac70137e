"""The one grammar of a key, for telemetry, attributes and alert rules alike: 1-64 letters, digits, '_', '.', '-'.

Checked with str.strip (what is left once the allowed characters are stripped from both ends must be nothing): a
loop in C, a quarter of a regex match's time, and the parser runs it for every reading.
"""

import string

KEY_MAX = 64
_KEY_CHARS = string.ascii_letters + string.digits + "_.-"


def is_key(text: str) -> bool:
    return 0 < len(text) <= KEY_MAX and not text.strip(_KEY_CHARS)
