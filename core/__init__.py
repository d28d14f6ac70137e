"""The leaf package: what every app uses (settings helpers, time, logs, metrics, the wire protocol, the
database dialect). It imports no app of the hub, so any app may import it."""
