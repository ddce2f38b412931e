helper="$1"; wait="$2"; redis="$3"; shift 3
end=$(( $(date +%s) + wait ))
for peer in "$@"; do
  "$helper" options "$peer" 5060 --attempts 1 >/dev/null 2>&1 || continue
  until "$helper" rpc dmq.list_nodes 2>/dev/null | tr -d ' \n' \
        | grep -q "\"host\":\"$peer\"[^}]*\"status\":\"active\""; do
    [ "$(date +%s)" -lt "$end" ] || { echo "edge $peer is not on the DMQ bus" >&2; exit 1; }
    sleep 1
  done
done
[ -n "$redis" ] || exit 0
ping_redis() {
python3 - "$redis" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=2) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
}
until ping_redis 2>/dev/null; do
  [ "$(date +%s)" -lt "$end" ] || { echo "Redis $redis does not answer" >&2; exit 1; }
  sleep 1
done
