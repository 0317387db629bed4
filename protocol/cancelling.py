"""A cancellation that ``asyncio.wait_for`` swallowed, raised again.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result instead of raising ``CancelledError`` when
the cancellation arrives in the same turn of the loop as the result. The task still counts the request
(``Task.cancelling()``) but will not be cancelled again: a loop that then awaits its next step never ends,
nor does whatever waits for it (a daemon or a ``serve`` that does not stop on SIGTERM). The libraries here
wait that way inside calls we cannot change (aiomqtt's ``publish`` and ``subscribe`` with their timeout,
pymodbus's ``connect`` and requests); after each such call in a loop, :func:`raise_if_cancelling`. Our own
waits use ``asyncio.timeout``, which does not swallow.

The count is only as true as the task's TaskGroups keep it: on 3.11 a TaskGroup whose child fails while the
parent already waits in its exit cancels the parent and never takes the request back (gh-116720, fixed in
3.12), so a task that loops over connections keeps each TaskGroup in its body until a child fails
(``agent/sync/session.py``, ``cloud_stub/service.py``).
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task was asked to cancel (and a library call swallowed it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
