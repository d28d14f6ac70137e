"""Device access tokens: random, shown once, stored as a hash."""

import hashlib
import secrets

# 24 random bytes = 192 bits, URL-safe so it fits a path segment and an MQTT password.
TOKEN_BYTES = 24


def token_new() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 of the token. A slow password hash is unnecessary: tokens carry 192 bits of entropy."""
    return hashlib.sha256(token.encode()).hexdigest()
