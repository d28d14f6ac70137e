"""What the registry tells whoever listens, without knowing who: a device's credentials changed (created,
rotated, deleted), sent once the change commits. The MQTT broker's live credentials listen (bridge/apps.py)."""

from django.dispatch import Signal

# created: {key: plaintext token} of devices created or rotated (the only moment the token exists); deleted: keys.
credentials_changed = Signal()
