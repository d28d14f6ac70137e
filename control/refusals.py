"""What the hub refuses a device or an operator about attributes and commands, one shape for every transport: a
stable `code`, a message and, for an attribute, the `key` at fault (a device's error frame names it)."""


class ControlRefused(ValueError):
    def __init__(self, code: str, message: str, *, key: str | None = None) -> None:
        self.code, self.message, self.key = code, message, key
        super().__init__(message)
