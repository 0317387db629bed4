"""The durable outbox: everything the device sends goes through it, and nothing leaves it unacknowledged.

Theory of operation.

* **Durable before the raiser returns.** :meth:`Outbox.add` queues an event and returns a future
  that resolves once the event's row has been committed (``synchronous=FULL``). One writer task
  commits everything queued meanwhile in one transaction: *group commit* (``writer.py``), so a burst
  of a thousand events costs a handful of fsyncs, not a thousand.
* **seq strictly increasing across restarts.** The writer assigns ``seq`` inside the transaction
  from a counter stored in the same database (and reserved ahead in the sidecar file, which outlives
  a lost database: ``agent/store/sidecar.py``). A rolled-back batch assigns nothing, so there is no gap.
* **At least once.** A row leaves the queue only after its PUBACK (:meth:`Outbox.acknowledge`,
  batched too). After a reconnect everything not yet acknowledged is sent again, in queue order
  (``reader.py``: one reader per connection).
* **Nothing lost past the broker.** A broker that acknowledged a message can still lose it (a crash
  before it saved; amqtt after a stall). Sent rows are therefore kept (``keep_sent``, oldest pruned
  first; while a backlog drains they may exceed it by up to ``max_events``, pruned once the queue is
  empty: ``policy.prune_excess``; dropped first when the disk is full), and the cloud, seeing a gap
  in seq, asks for them again (``resync`` with ``from_seq``: :meth:`Outbox.replay_in`); the event ids
  let it drop duplicates.
* **Held, never dropped.** An event whose gate (``report_alarm`` for alarms; call alerts have none:
  ``events.GATES``) is denied stays in the queue with ``held_since`` set, is counted in the state
  report, and goes out with ``held_since`` once the gate opens. ``policy.is_held`` is the one rule.
* **Bounded.** At ``max_events`` a new event evicts the oldest row of the lowest priority class, if
  that class is not above its own (health first, then door logs, then the device's own reports;
  alarms, call alerts, sensor events and replies last); otherwise the new event is refused with
  :class:`OutboxFull` (``policy.admit``). The depth is counted from the rows each commit changes,
  so it is what is stored, whatever the interleaving (a row evicted while its publish was in flight
  included). On a full disk, rows kept for replay go first; alarms, sensor events, call alerts and
  door logs then spend the data directory's reserve (``agent/store/reserve.py``), and once it is spent the
  most urgent make room by evicting as at the cap; everything else is refused until space returns.
  Each eviction is counted per type and reported.

Events raised together with other writes (a command's reply, an expiry notice) are queued inside
the caller's transaction with :meth:`Outbox.add_in` / :meth:`Outbox.reply_in`: they commit, or not,
with it.

Modules: ``box.py`` (the :class:`Outbox`), ``policy.py`` (pure decisions), ``rows.py`` (the only SQL
of the ``outbox`` and ``counters`` tables), ``writer.py`` (group commit), ``reader.py`` (the pump's walk).
"""

from agent.outbox.box import FETCH, Outbox, Queued
from agent.outbox.reader import Pump, Reader
from agent.outbox.rows import OutRow, queued, salvage
from agent.outbox.rows import restore as restore_in

__all__ = ["FETCH", "OutRow", "Outbox", "Pump", "Queued", "Reader", "queued", "restore_in", "salvage"]
