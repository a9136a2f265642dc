"""The hand-off between a served connection and a ``WorkerPool``: the items
a connection queues to the pool, and the reasons its reading is paused.

Owned here, shared by ``netring._served`` (which queues items and runs them
on a worker) and ``netring.workers`` (which orders, counts and hands them
out, and pauses connections for backpressure).

An item is a plain tuple, built in one place (``WorkerPool._push``) and read
through the index constants below::

    (kind, arg, nbytes, npackets, queued_at, priority, seq)

- ``kind``: one of the item kinds below; ``arg`` its argument (the data,
  the packet(s), or the exception for ``LOST``);
- ``nbytes`` / ``npackets``: what it counts against the pool's limits; only
  data items (``npackets > 0``) count;
- ``queued_at``: ``time.monotonic()`` when queued (the pool's wait time);
- ``priority`` / ``seq``: its place in a priority pool (lower first, then
  arrival order).

A connection's reading is paused while any of the reason bits below is set
in its ``mask``, and resumed when none is left; the pool sets and clears
them (``WorkerPool._flip``, under its lock) and calls the connection's
``transport.pause_reading()`` / ``resume_reading()`` on the first set and
the last clear.
"""

from __future__ import annotations

# -- an item's fields (indices into the tuple) -------------------------------------
KIND, ARG, NBYTES, NPACKETS, QUEUED_AT, PRIORITY, SEQ = range(7)

# -- item kinds ----------------------------------------------------------------------
#: ``data_received(arg)`` (Raw framing: one chunk).
DATA = 0
#: ``packets_received(arg)``, or ``packet_received`` for each (one read's packets).
PACKETS = 1
#: One packet (a priority pool queues each packet under its own priority).
PACKET = 2
EOF = 3
TIMEOUT = 4
PAUSE_WRITING = 5
RESUME_WRITING = 6
#: ``connection_lost(arg)``: always the last item of a connection, never dropped.
LOST = 7
#: A task (``WorkerPool.submit``, a timer with ``workers=``): no connection.
CALL = 8

#: The callback each kind runs, for log messages.
CALLBACK_NAMES = {
    DATA: "data_received", PACKETS: "packet_received", PACKET: "packet_received",
    EOF: "eof_received", TIMEOUT: "timeout_received", PAUSE_WRITING: "pause_writing",
    RESUME_WRITING: "resume_writing", LOST: "connection_lost", CALL: "a task",
}

# -- why a connection does not read (bits of its ``mask``) ---------------------------
#: Its protocol called ``transport.pause_reading()``.
PAUSED_BY_USER = 1
#: The pool's queue is over a limit (backpressure); cleared at low water.
PAUSED_BY_POOL = 2
#: Its server is shutting down.
PAUSED_BY_SHUTDOWN = 4
