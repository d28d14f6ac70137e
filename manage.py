#!/usr/bin/env python
"""Django's command-line utility for the hub (`telemetry-hub` once installed)."""

from hub.cli import main

if __name__ == "__main__":
    main()
