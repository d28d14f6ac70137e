"""Device self-provisioning, as ThingsBoard's: an operator creates a profile (a key pattern, labels to apply, a
secret, an optional expiry and maximum count); a device that knows the profile's key and secret registers
itself under its own key and receives its token, once. The secret is random and stored only as a hash."""

import hmac
from collections.abc import Mapping
from datetime import datetime
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from devices.labels import labels_problems
from devices.models import Device, ProvisioningProfile
from devices.services import DevicesRefused, RowProblem, device_create, device_problems
from devices.tokens import token_hash, token_new

MAX_DEVICES = 2**31 - 1  # what the column holds (a PositiveIntegerField)

# Compared against when no profile has the key, so a wrong key costs what a wrong secret does.
_NO_PROFILE_HASH = token_hash(token_new())


class ProvisioningRefused(Exception):
    """A provisioning attempt was refused: `code` says why (REFUSED never says whether the profile exists)."""

    REFUSED = "provisioning_refused"  # unknown profile or wrong secret
    EXPIRED = "profile_expired"
    EXHAUSTED = "profile_exhausted"
    KEY_NOT_ALLOWED = "key_not_allowed"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ProfileExists(Exception):
    """A provisioning profile with this key exists."""


def provisioning_profile_create(
    *,
    key: str,
    key_pattern: str = "*",
    labels: Mapping[str, str] | None = None,
    expires_at: datetime | None = None,
    max_devices: int | None = None,
) -> tuple[ProvisioningProfile, str]:
    """Create a profile; returns it with its plaintext secret (the only time it is visible). Raises
    ValidationError naming the field, or ProfileExists."""
    secret = token_new()
    profile = ProvisioningProfile(
        key=key,
        key_pattern=key_pattern,
        labels=dict(labels or {}),
        secret_hash=token_hash(secret),
        expires_at=expires_at,
        max_devices=max_devices,
    )
    problems = {}
    if found := labels_problems(profile.labels):
        problems["labels"] = "; ".join(found)
    if max_devices is not None and not 1 <= max_devices <= MAX_DEVICES:
        problems["max_devices"] = f"from 1 to {MAX_DEVICES} (leave it out for no limit)"
    try:
        profile.clean_fields(exclude=["labels", "secret_hash", "max_devices"])
    except ValidationError as exc:
        problems |= {field: " ".join(messages) for field, messages in exc.message_dict.items()}
    if problems:
        raise ValidationError(problems)
    try:
        with transaction.atomic():
            profile.save()
    except IntegrityError:
        raise ProfileExists(key) from None
    return profile, secret


def provisioning_profile_delete(*, key: str) -> None:
    """Delete a profile: its secret stops working; devices it provisioned stay. Raises DoesNotExist."""
    deleted, _ = ProvisioningProfile.objects.filter(key=key).delete()
    if not deleted:
        raise ProvisioningProfile.DoesNotExist(key)


def device_provision(*, profile_key: str, secret: str, device_key: str, name: str = "") -> tuple[Device, str]:
    """Register `device_key` through a profile; returns the device and its token (shown once). Raises
    ProvisioningRefused, or DevicesRefused (an invalid key, or one already registered: a second call for the
    same key is refused, so a token is never handed out twice)."""
    profile = ProvisioningProfile.objects.filter(key=profile_key).first()
    expected = profile.secret_hash if profile is not None else _NO_PROFILE_HASH
    if not hmac.compare_digest(token_hash(secret), expected) or profile is None:
        raise ProvisioningRefused(ProvisioningRefused.REFUSED, "unknown profile or wrong secret")
    if profile.expires_at is not None and profile.expires_at <= timezone.now():
        raise ProvisioningRefused(ProvisioningRefused.EXPIRED, f"the profile {profile.key!r} has expired")
    if problems := device_problems(key=device_key, name=name):
        raise DevicesRefused([RowProblem(1, device_key, field, message) for field, message in problems.items()])
    if not fnmatchcase(device_key, profile.key_pattern):
        message = f"the device key {device_key!r} does not match the profile's pattern {profile.key_pattern!r}"
        raise ProvisioningRefused(ProvisioningRefused.KEY_NOT_ALLOWED, message)
    with transaction.atomic():
        # Counted in the same transaction as the device: a refused device does not use up the profile.
        room = Q(max_devices__isnull=True) | Q(provisioned__lt=F("max_devices"))
        if not ProvisioningProfile.objects.filter(id=profile.id).filter(room).update(provisioned=F("provisioned") + 1):
            message = f"the profile {profile.key!r} has provisioned its {profile.max_devices} devices"
            raise ProvisioningRefused(ProvisioningRefused.EXHAUSTED, message)
        return device_create(key=device_key, name=name, labels=profile.labels)
