# The pid of the running keepalived on stdout (its pid file, else systemd's MainPID); exit 1
# when none runs. Read by state.yml and by the quick deploy's check and gate (quick.yml).
pidfile="$1"; service="$2"
pid=$(cat "$pidfile" 2>/dev/null || true)
if [ -z "$pid" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  pid=$(systemctl show -p MainPID --value "$service" 2>/dev/null || true)
  [ "$pid" = 0 ] && pid=
fi
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; exit 0; fi
echo "keepalived is not running (pid file $pidfile)" >&2
exit 1
