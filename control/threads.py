"""Where attributes' and commands' database work runs from async code: a worker thread of its own for each call,
its connection given back to the pool when the call ends. Not Channels' default (one thread for the whole
process's synchronous work, outside a request), so a thousand devices' commands are not handed out one at a time;
and never a connection held across a wait (a command waits up to HUB_COMMAND_TIMEOUT_MAX_SECONDS)."""

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async


def db_call(function: Callable[..., Any]) -> Callable[..., Any]:
    return database_sync_to_async(function, thread_sensitive=False)
