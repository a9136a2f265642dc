"""examples/file_server.py's FileServer on netring (transport.sendfile).

Usage: file_netring.py --root DIR [--backend io_uring|epoll] [--port P]
Prints ``READY <port>`` once listening on 127.0.0.1 (one IO thread).
"""

import argparse
import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "file_server.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("file_server", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.serve(args.root, port=args.port, backend=args.backend, io_threads=1)
    print(f"READY {server.port}", flush=True)
    print(f"netring backend={server.backend}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
