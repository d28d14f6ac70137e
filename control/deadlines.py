"""The maintenance sweep that ends commands past their deadline and tells whoever waits for them."""

import asyncio
import logging

from control.bus import ControlBus
from control.commands import commands_ended
from control.threads import db_call

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0  # a deadline is kept to within this (a waiting caller also ends its own command on time)


async def deadline_loop(bus: ControlBus) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            ended = await db_call(commands_ended)()
        except Exception:
            logger.warning("commands: the deadline sweep failed; retrying", exc_info=True)
            continue
        for command in ended:
            await bus.ended(command.id)
