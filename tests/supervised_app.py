"""A program for tests/test_supervisor.py: ``netring.run_workers`` serving a
test protocol, run as ``python tests/supervised_app.py MODE PORT BACKEND``.

Prints ``ready HOST:PORT`` once every worker is ready. Modes:

``pid``      every chunk received is answered with the worker's pid and a newline
``slow``     on a worker thread: ``got\\n`` at once, ``done\\n`` a second later
``stubborn`` ``pid``, but the worker ignores SIGTERM (killed after the grace)
``fail``     ``build`` raises at start-up
``noreuse``  the Server lacks ``reuse_port=True``
``port0``    each worker binds port 0 (a different port each)

``--listen``: the supervisor binds the port (``run_workers(listen=)``) and
each worker serves its slot's socket (``worker_sockets()``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import netring


class Pid(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"%d\n" % os.getpid())


class Slow(Pid):
    def data_received(self, data: bytes) -> None:  # on a worker thread
        self.transport.write(b"got\n")
        time.sleep(1.0)
        self.transport.write(b"done\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pid", "slow", "stubborn", "fail", "noreuse", "port0"])
    p.add_argument("port", type=int)
    p.add_argument("backend")
    p.add_argument("--processes", default="2")
    p.add_argument("--grace", type=float, default=2.0)
    p.add_argument("--max-start-failures", type=int, default=5)
    p.add_argument("--listen", action="store_true")
    p.add_argument("--backoff", type=float, default=0.1)
    args = p.parse_args()
    mode = args.mode

    def build() -> netring.Server:
        if mode == "fail":
            raise RuntimeError("boom at start-up")
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.listen:
            (sock,) = netring.supervisor.worker_sockets()
            return netring.Server(Slow if mode == "slow" else Pid, sock=sock,
                                  backend=args.backend, io_threads=1,
                                  workers=1 if mode == "slow" else None)
        return netring.Server(
            Slow if mode == "slow" else Pid, "127.0.0.1", 0 if mode == "port0" else args.port,
            backend=args.backend, io_threads=1, reuse_port=mode != "noreuse",
            workers=1 if mode == "slow" else None)

    def ready(listening: list[netring.supervisor.Listening]) -> None:
        print(f"ready {listening[0].host}:{listening[0].port}", flush=True)

    processes = args.processes if args.processes == "auto" else int(args.processes)
    netring.run_workers(build, processes, grace=args.grace, on_ready=ready,
                        max_start_failures=args.max_start_failures, backoff=args.backoff,
                        listen=[("127.0.0.1", args.port)] if args.listen else None)
    print("stopped", flush=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    main()
