"""Command line: ``python -m netring serve NAME [NAME...] [options]``.

Several names run several servers on one IO pool (``--port`` once per
name, in order; without ``--port`` they take 5050, 5051, ...), TCP and UDP
alike: ``serve echo packet-echo udp-echo --port 5050 --port 5051 --port 5052``. Each server
prints exactly one line, ``netring: serving NAME on H:P (backend=B,
io_threads=N)``, once it accepts connections; the process exits 0 after a
graceful drain on SIGINT or SIGTERM.

``--tls-cert FILE --tls-key FILE`` serves every TCP server over TLS
(the ready line then ends ``, tls)``); ``--tls-ca FILE --tls-client-auth
required|optional`` asks clients for certificates signed by that CA.

Under systemd socket activation (``LISTEN_FDS``; or
``systemd-socket-activate -l PORT python -m netring serve echo``) the TCP
servers serve the passed sockets: one named like a server
(``FileDescriptorName=echo``) goes to it, the others in order.

``--proxy-protocol v1|v2|any --trusted-proxy NET [...]``: TCP servers
behind a load balancer that sends the PROXY protocol (HAProxy's
``send-proxy``): ``peername`` is the client's address.

``--workers N`` runs the TCP servers' callbacks on one shared
``WorkerPool`` of N threads (0: none, on the IO thread); without it, an
example that needs workers (``line-workers``: 8) gets its default.

``--processes N|auto`` runs N worker processes (``auto``: the usable CPUs,
cgroup-aware), each serving every NAME on the same ports
(``netring.run_workers(listen=)``: the supervisor binds one ``SO_REUSEPORT``
socket per TCP server per worker slot and keeps them for the whole run, so
a replaced worker takes over its slot's socket; UDP endpoints bind their
own); the ready lines are printed once per server when every worker is
ready. SIGTERM/SIGINT drains them all; SIGHUP replaces them one at a time.
``--port 0`` picks the port with the first slot's socket (UDP: in the
supervisor, only picked, as a bound UDP socket would receive datagrams).

``--metrics-port P [--metrics-host H]`` serves Prometheus metrics on
``http://H:P/metrics`` (``netring.metrics``; H defaults to 127.0.0.1, P 0
picks a free port, logged); with ``--processes`` the supervisor serves them,
every worker's figures combined.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from .errors import ConfigurationError
from .pool import BACKENDS, IOPool
from .server import Server, _resolve
from .servers import POOL_OPTIONS, SERVERS
from .supervisor import Listening, WorkerStartError, run_workers, usable_cpus, worker_sockets
from .systemd import listen_fds
from .tls import TLSConfig
from .workers import WorkerPool

DEFAULT_PORT = 5050


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netring", description=__doc__.splitlines()[0])
    from . import __version__
    p.add_argument("--version", action="version", version=f"netring {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run example servers")
    serve.add_argument("names", nargs="+", choices=sorted(SERVERS), metavar="NAME",
                       help="; ".join(f"{k}: {v.description}" for k, v in SERVERS.items()))
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, action="append", default=None,
                       help=f"port, once per NAME (default {DEFAULT_PORT}, then +1; 0 picks one)")
    serve.add_argument("--io-threads", type=int, default=None,
                       help="IO threads (default: 1 with the GIL, one per CPU without)")
    serve.add_argument("--backend", choices=BACKENDS, default=None,
                       help="IO backend (default auto, or $NETRING_BACKEND)")
    serve.add_argument("--upstream", default=None, metavar="HOST:PORT",
                       help="the proxy's target")
    serve.add_argument("--grace", type=float, default=5.0,
                       help="seconds to drain on shutdown (default 5)")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker threads for the servers' callbacks, shared (0: none; "
                            "default: the example's own, line-workers 8)")
    serve.add_argument("--tls-cert", default=None, metavar="FILE",
                       help="serve TLS with this PEM certificate chain "
                            "(TCP servers; needs --tls-key)")
    serve.add_argument("--tls-key", default=None, metavar="FILE",
                       help="the PEM private key of --tls-cert")
    serve.add_argument("--tls-ca", default=None, metavar="FILE",
                       help="PEM CA bundle client certificates must chain to "
                            "(with --tls-client-auth)")
    serve.add_argument("--proxy-protocol", default=None, choices=("v1", "v2", "any"),
                       help="TCP servers: every connection starts with a PROXY protocol "
                            "header from a load balancer (needs --trusted-proxy)")
    serve.add_argument("--trusted-proxy", action="append", default=None, metavar="NET",
                       help="a network allowed to send PROXY headers (e.g. 10.0.0.0/8); "
                            "repeat for several")
    serve.add_argument("--tls-client-auth", default="none",
                       choices=("none", "optional", "required"),
                       help="ask clients for a certificate (default none; needs --tls-ca)")
    serve.add_argument("--work-ms", type=float, default=0.0, metavar="MS",
                       help="line-workers: milliseconds each command sleeps after its "
                            "query, standing in for a remote call (default 0)")
    serve.add_argument("--processes", type=_processes, default=None, metavar="N|auto",
                       help="worker processes, each serving every NAME on the same ports "
                            "(SO_REUSEPORT); auto: the usable CPUs (default: one process, "
                            "no supervisor)")
    serve.add_argument("--metrics-port", type=int, default=None, metavar="P",
                       help="serve Prometheus metrics on this port (needs prometheus_client; "
                            "with --processes: the supervisor, all workers combined)")
    serve.add_argument("--metrics-host", default="127.0.0.1", metavar="H",
                       help="address of the metrics endpoint (default 127.0.0.1)")
    serve.add_argument("--metrics", default=None, metavar="HOST:PORT", type=_host_port,
                       help="the same as --metrics-host HOST --metrics-port PORT")
    return p


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _processes(value: str) -> int:
    if value == "auto":
        return usable_cpus()
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), not {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    names: list[str] = args.names
    ports: list[int] = args.port or [DEFAULT_PORT + i for i in range(len(names))]
    if len(ports) != len(names):
        parser.error(f"give --port once per server ({len(names)}), or not at all")
    pool_options: dict[str, Any] = {}
    for name in names:
        for key in POOL_OPTIONS:
            if key in SERVERS[name].options:
                if pool_options.get(key, SERVERS[name].options[key]) != SERVERS[name].options[key]:
                    parser.error(f"{name}: needs a different {key} than the other servers")
                pool_options[key] = SERVERS[name].options[key]
    # NOTE: handlers first, ready lines after: a signal sent right after a
    # ready line must drain, not kill the process.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    if args.workers is not None and args.workers < 0:
        parser.error("--workers: must be >= 0")
    if args.work_ms < 0:
        parser.error("--work-ms: must be >= 0")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is None and (args.tls_ca is not None or args.tls_client_auth != "none"):
        parser.error("--tls-ca and --tls-client-auth need --tls-cert and --tls-key")
    if (args.tls_client_auth != "none") != (args.tls_ca is not None):
        parser.error("--tls-client-auth and --tls-ca go together")
    tls = None
    if args.tls_cert is not None:
        try:
            tls = TLSConfig(args.tls_cert, args.tls_key, ca=args.tls_ca,
                            client_auth=args.tls_client_auth)
        except (ConfigurationError, TypeError) as e:
            print(f"netring: cannot use the TLS certificate: {e}", file=sys.stderr)
            return 2
    activated = _activated_sockets(names)
    if args.metrics is not None:
        if args.metrics_port is not None:
            parser.error("--metrics and --metrics-port: give one")
        args.metrics_host, args.metrics_port = args.metrics
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port: must be 0..65535")
    if args.processes is not None:
        return _serve_processes(args, names, ports, pool_options, tls, activated)
    threads = {name: (SERVERS[name].workers or 0) if args.workers is None else args.workers
               for name in names if not SERVERS[name].udp}
    servers: list[Server] = []
    endpoints: list[Any] = []
    try:
        pool = IOPool(args.io_threads, backend=args.backend, **pool_options)
    except Exception as e:
        print(f"netring: cannot start the IO pool: {e}", file=sys.stderr)
        return 2
    workers = None
    if max(threads.values(), default=0):
        try:
            workers = WorkerPool(max(threads.values()))
        except Exception as e:
            print(f"netring: cannot start the worker pool: {e}", file=sys.stderr)
            pool.close(0)
            return 2
        logging.getLogger("netring").info("%d worker threads for %s", workers.threads,
                                          ", ".join(n for n, t in threads.items() if t))
    endpoint = None
    if args.metrics_port is not None:
        try:
            endpoint = _serve_metrics(args, names[0], pool)
        except Exception as e:
            print(f"netring: cannot serve metrics: {e}", file=sys.stderr)
            pool.close(0)
            if workers is not None:
                workers.close(0)
            return 2
    for name, port in zip(names, ports, strict=True):
        example = SERVERS[name]
        options = {k: v for k, v in example.options.items() if k not in POOL_OPTIONS}
        try:
            if example.udp:
                transport, _ = pool.create_datagram_endpoint(
                    example.make_factory(pool, args), (args.host, port), **options).result(10)
                endpoints.append(transport)
                host, bound = transport.get_extra_info("sockname")[:2]
            else:
                fd = activated.get(name)
                server = Server(example.make_factory(pool, args), args.host, port, pool=pool,
                                workers=workers if threads[name] else None, tls=tls,
                                **options, **_proxy_options(args), fd=fd)
                server.start()
                if fd is not None:
                    os.close(fd)  # the server serves its own duplicate
                servers.append(server)
                if endpoint is not None:
                    endpoint.collector.add_server(server, name)
                host, bound = server.host, server.port
        except Exception as e:  # configuration and bind errors: one clear line
            print(f"netring: cannot serve {name}: {e}", file=sys.stderr)
            if endpoint is not None:
                endpoint.close()
            pool.close(0)
            if workers is not None:
                workers.close(0)
            return 2
        over = ", tls" if tls is not None and not example.udp else ""
        print(f"netring: serving {name} on {host}:{bound} "
              f"(backend={pool.backend}, io_threads={pool.io_threads}{over})", flush=True)
    while not stop.wait(0.1):
        pass
    for server in servers:
        server.shutdown(args.grace)
    for endpoint in endpoints:
        endpoint.close()
    pool.close(args.grace)
    if workers is not None:
        workers.close(args.grace)
    if endpoint is not None:
        endpoint.close()
    return 0


def _serve_metrics(args: argparse.Namespace, first: str, pool: IOPool) -> Any:
    """``--metrics-port``: the endpoint, the pool named after the first
    server (as in a worker process); servers are added as they start."""
    from . import metrics

    endpoint = metrics.serve(args.metrics_port, args.metrics_host, pools={first: pool})
    logging.getLogger("netring.metrics").info("metrics on %s", endpoint.url)
    return endpoint


# -- --processes: worker processes under a supervisor --------------------------------


class _Endpoint:
    """A UDP endpoint as ``run_workers`` sees a server."""

    def __init__(self, transport: Any, pool: IOPool) -> None:
        self._transport = transport
        self.host, self.port = transport.get_extra_info("sockname")[:2]
        self.backend = pool.backend
        self.io_threads = pool.io_threads
        self.pool = pool  # its figures, for --metrics-port

    def start(self) -> None:
        pass

    def shutdown(self, grace: float = 0.0) -> None:
        self._transport.close()


def _build_worker(args: argparse.Namespace, names: list[str], ports: list[int],
                  pool_options: dict[str, Any], tls: TLSConfig | None,
                  activated: dict[str, int], bound: list[int]) -> list[Any]:
    """In a worker process: the IO pool, the worker pool and every server:
    a TCP server serves its slot's socket the supervisor bound (``bound``:
    the servers' indexes in ``names``, in ``worker_sockets()``'s order) or the socket systemd passed
    (inherited: every worker accepts from that one socket); a UDP endpoint
    binds with SO_REUSEPORT. What is left open when a worker drains (the
    pools) is closed by the worker after its servers."""
    slot_sockets = dict(zip(bound, worker_sockets(), strict=True)) if bound else {}
    # NOTE: by index: the same NAME may be given twice (two ports).
    pool = IOPool(args.io_threads, backend=args.backend, **pool_options)
    threads = {name: (SERVERS[name].workers or 0) if args.workers is None else args.workers
               for name in names if not SERVERS[name].udp}
    workers = WorkerPool(max(threads.values())) if max(threads.values(), default=0) else None
    served: list[Any] = []
    for i, (name, port) in enumerate(zip(names, ports, strict=True)):
        example = SERVERS[name]
        options = {k: v for k, v in example.options.items() if k not in POOL_OPTIONS}
        fd = activated.get(name)
        sock = slot_sockets.get(i)
        if example.udp:
            options["reuse_port"] = True
            transport, _ = pool.create_datagram_endpoint(
                example.make_factory(pool, args), (args.host, port), **options).result(10)
            served.append(_Endpoint(transport, pool))
        else:
            server = Server(example.make_factory(pool, args), args.host, port, pool=pool,
                            workers=workers if threads[name] else None, tls=tls, **options,
                            **_proxy_options(args), fd=fd, sock=sock)
            server.start()
            if fd is not None:
                os.close(fd)  # this worker's inherited copy; the server has its own
            served.append(server)
    return served


def _activated_sockets(names: list[str]) -> dict[str, int]:
    """Listening sockets from systemd socket activation, by server name: a
    socket named like a server (``FileDescriptorName=``) goes to it, the
    rest to the other TCP servers in order."""
    fds = listen_fds()
    if not fds:
        return {}
    tcp = [n for n in names if not SERVERS[n].udp]
    chosen = {n: fd for n, fd in fds if n in tcp}
    rest = [fd for n, fd in fds if n not in chosen]
    for name in tcp:
        if name not in chosen and rest:
            chosen[name] = rest.pop(0)
    for fd in rest:
        logging.getLogger("netring").warning(
            "systemd passed descriptor %d and no server takes it", fd)
    return chosen


def _proxy_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--proxy-protocol`` / ``--trusted-proxy`` as ``Server`` options."""
    if args.proxy_protocol is None and args.trusted_proxy is None:
        return {}
    return {"proxy_protocol": args.proxy_protocol, "trusted_proxies": args.trusted_proxy}


def _pick_port(host: str, udp: bool) -> socket.socket:
    """A socket bound to a free port of ``host`` with SO_REUSEPORT (workers
    bind beside it), not listening (it never takes a connection)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _serve_processes(args: argparse.Namespace, names: list[str], ports: list[int],
                     pool_options: dict[str, Any], tls: TLSConfig | None,
                     activated: dict[str, int]) -> int:
    """``--processes N``: a supervisor running N workers that each serve
    every NAME; one ready line per server once all N are ready. The
    supervisor binds every TCP server's sockets (one per worker slot, see
    ``run_workers(listen=)``); sockets from systemd stay open in it for the
    whole run and are shared by every worker. Both survive a worker's
    replacement."""
    bound = [i for i, n in enumerate(names) if not SERVERS[n].udp and n not in activated]
    try:
        host = _resolve(args.host)
        for i, (name, port) in enumerate(zip(names, ports, strict=True)):
            if port == 0 and SERVERS[name].udp:
                sock = _pick_port(host, SERVERS[name].udp)
                ports[i] = sock.getsockname()[1]
                sock.close()
    except (OSError, ValueError) as e:
        print(f"netring: cannot pick a port on {args.host}: {e}", file=sys.stderr)
        return 2

    def ready(listening: list[Listening]) -> None:
        for name, where in zip(names, listening, strict=True):
            over = ", tls" if tls is not None and not SERVERS[name].udp else ""
            print(f"netring: serving {name} on {where.host}:{where.port} "
                  f"(backend={where.backend}, io_threads={where.io_threads}{over})", flush=True)

    def build() -> list[Any]:
        return _build_worker(args, names, ports, pool_options, tls, activated, bound)

    logging.getLogger("netring").info("%d worker processes", args.processes)
    try:
        metrics = None
        if args.metrics_port is not None:
            from .metrics import WorkerMetrics
            metrics = WorkerMetrics(args.metrics_port, args.metrics_host, names=names)
        listen = [(host, ports[i]) for i in bound]
        run_workers(build, args.processes, grace=args.grace, on_ready=ready, metrics=metrics,
                    listen=listen or None)
    except WorkerStartError as e:
        print(f"netring: {e}", file=sys.stderr)
        return 1
    except (ConfigurationError, TypeError, ImportError) as e:
        print(f"netring: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a port someone else holds: the servers' (bound by the
        # supervisor, its message says where) or the metrics endpoint's
        if "cannot listen" in str(e):
            print(f"netring: {e}", file=sys.stderr)
        elif args.metrics_port is not None:
            print(f"netring: cannot serve metrics: {e}", file=sys.stderr)
        else:
            raise
        return 2
    return 0


def console() -> None:
    """The ``netring`` command (the same as ``python -m netring``)."""
    sys.exit(main())
