"""Commanding a machine and hearing back (issue 17): the command goes out on the machine's
channel (``Keys.machine_commands``); the supervisor answers by pushing a ``CommandReply`` onto
``Keys.machine_reply(command_id)`` (a list that expires), which the sender pops with a timeout.
No listener, or no answer in time, reads as "the machine did not answer".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from emp_core.queue.keys import Keys
from emp_core.registry.machines import MachineCommand, send_command

REPLY_TTL_S = 60


class CommandReply(BaseModel):
    command_id: str
    ok: bool
    message: str
    lines: list[str] = []


async def command_and_wait(
    redis: Redis, keys: Keys, machine_id: str, command: MachineCommand, *, timeout_s: float = 5.0
) -> CommandReply | None:
    """Send ``command``; the machine's reply, or None when it did not answer in time."""
    if await send_command(redis, keys, machine_id, command) == 0:
        return None
    answer: Any = await redis.blpop([keys.machine_reply(command.command_id)], timeout=timeout_s)
    if answer is None:
        return None
    return CommandReply.model_validate_json(answer[1])


async def reply(redis: Redis, keys: Keys, answer: CommandReply) -> None:
    """The supervisor's side: push the answer where the sender waits for it."""
    key = keys.machine_reply(answer.command_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.rpush(key, answer.model_dump_json())
        pipe.expire(key, REPLY_TTL_S)
        await pipe.execute()
