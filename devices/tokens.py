"""Device access tokens: random, shown once, stored as a hash."""

import base64
import hashlib
import secrets

# 24 random bytes = 192 bits, URL-safe so it fits a path segment and an MQTT password.
TOKEN_BYTES = 24


def token_new() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 of the token. A slow password hash is unnecessary: tokens carry 192 bits of entropy."""
    return hashlib.sha256(token.encode()).hexdigest()


# The MQTT broker checks a device's password (its token) itself, against a salted PBKDF2-SHA512 hash in the
# "$7$" format of Mosquitto's password file. The registry keeps that hash beside the SHA-256, computed while
# the plaintext exists, so `mqtt_auth_files` can write the broker's files at any time (docs/mqtt.md).
# Iterations as mosquitto_passwd's default: a 192-bit token needs no key stretching, and brokers verify
# every reconnect of every device.
BROKER_HASH_ITERATIONS = 101


def token_broker_hash(token: str, *, salt: bytes | None = None) -> str:
    """`$7$<iterations>$<salt>$<hash>`, base64, as `mosquitto_passwd` writes it."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", token.encode(), salt, BROKER_HASH_ITERATIONS, 64)
    return f"$7${BROKER_HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
