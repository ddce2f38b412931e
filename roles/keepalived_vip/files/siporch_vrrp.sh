#!/bin/sh
# keepalived's helper on an edge of an active-standby pair (installed by the keepalived_vip
# role; keepalived runs it as root).
#
#   siporch_vrrp.sh check DAEMON   the vrrp_script of DAEMON (kamailio, rtpengine), every
#                                  second: exit 0 while it runs. A restart that a deploy
#                                  planned is not a failure: the deploy writes
#                                  /run/siporch/DAEMON-restart (the time) before it restarts
#                                  the daemon and removes it once the restart is over; while
#                                  that mark is younger than MARK_S seconds a missing DAEMON
#                                  counts as running. A crash (no mark) fails at once.
#   siporch_vrrp.sh notify STATE CTL
#                                  keepalived's notify_master/backup/fault/stop (STATE
#                                  master, backup, fault, stop): tells this edge's Kamailio
#                                  (kamcmd over its ctl socket CTL) whether it holds the
#                                  floating address ($shv(vipheld), 1 or 0: an edge without
#                                  it refuses new calls with 503); on master also reloads
#                                  its dispatcher list (its probes left from the address it
#                                  did not hold, so every peer looks down). A Kamailio that
#                                  is restarting is tried again for a few seconds, as long
#                                  as STATE is still the latest (RUN_DIR/vrrp-state); one
#                                  that starts later reads the address itself.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
RUN_DIR="${SIPORCH_VRRP_RUN_DIR:-/run/siporch}"  # changed by the unit tests only
MARK_S=5

check() {
    daemon="$1"
    pgrep -x "$daemon" >/dev/null && return 0
    mark="$RUN_DIR/$daemon-restart"
    [ -f "$mark" ] || return 1
    written=$(stat -c %Y "$mark" 2>/dev/null) || return 1
    age=$(( $(date +%s) - written ))
    [ "$age" -ge 0 ] && [ "$age" -lt "$MARK_S" ]
}

KAMCMD="${SIPORCH_VRRP_KAMCMD:-/usr/sbin/kamcmd}"  # changed by the unit tests only

notify() {
    state="$1" ctl="$2"
    case "$state" in
        master) held=1 ;;
        backup|fault|stop) held=0 ;;
        *) usage ;;
    esac
    mkdir -p "$RUN_DIR"
    # the latest state, for a notification still trying (and for people)
    printf '%s %s\n' "$state" "$$" > "$RUN_DIR/vrrp-state.tmp"
    mv -f "$RUN_DIR/vrrp-state.tmp" "$RUN_DIR/vrrp-state"
    tries=0
    until "$KAMCMD" -s "$ctl" pv.shvSet vipheld int "$held" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 20 ] || return 0
        sleep 0.5
        [ "$(cat "$RUN_DIR/vrrp-state" 2>/dev/null)" = "$state $$" ] || return 0
    done
    [ "$held" = 0 ] || "$KAMCMD" -s "$ctl" dispatcher.reload
}

usage() {
    echo "usage: $0 check DAEMON | notify master|backup|fault|stop CTL" >&2
    exit 2
}

case "${1:-}" in
    check)
        [ $# -eq 2 ] || usage
        check "$2"
        ;;
    notify)
        [ $# -eq 3 ] || usage
        notify "$2" "$3"
        ;;
    *)
        usage
        ;;
esac
