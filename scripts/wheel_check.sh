#!/usr/bin/env bash
# Install the newest wheel in dist/ into a fresh virtualenv, with no Rust
# toolchain on PATH and no network index, and serve from it: what a user
# without Rust gets from `pip install netring-*.whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$(ls -t dist/netring-*.whl | head -1)
tmp=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
python3 -m venv "$tmp/venv"
clean_env=(env -i PATH=/usr/bin:/bin HOME="$tmp" LANG=C.UTF-8)
if "${clean_env[@]}" sh -c 'command -v cargo || command -v rustc'; then
    echo "wheel_check: a Rust toolchain is on the clean PATH" >&2
    exit 1
fi
"${clean_env[@]}" "$tmp/venv/bin/pip" install -q --no-index "$wheel"
"${clean_env[@]}" "$tmp/venv/bin/netring" --version
"${clean_env[@]}" "$tmp/venv/bin/python" -c \
    "import netring; print('netring', netring.__version__, netring.backend_info())"
"${clean_env[@]}" "$tmp/venv/bin/netring" serve echo --port 0 > "$tmp/ready" 2>"$tmp/log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "netring: serving echo" "$tmp/ready" && break
    sleep 0.1
done
port=$(sed -n 's/.*on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/ready")
[ -n "$port" ] || { echo "wheel_check: no ready line"; cat "$tmp/log"; exit 1; }
"${clean_env[@]}" "$tmp/venv/bin/python" - "$port" <<'PY'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(b"hello from a wheel")
    got = b""
    while len(got) < 18:
        got += s.recv(64)
assert got == b"hello from a wheel", got
PY
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
echo "wheel_check: $(basename "$wheel") installs without Rust and serves (port $port)"
