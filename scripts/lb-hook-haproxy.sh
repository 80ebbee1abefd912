#!/bin/sh
# Example load-balancer hook for `load_balancer: {type: script, path: scripts/lb-hook-haproxy.sh}`.
#
# zdupgrade calls it as:  lb-hook-haproxy.sh disable|enable NODE
# and, with `healthy: true` in the topology's load_balancer, as  lb-hook-haproxy.sh healthy NODE
# (before each wave and at the end: exit 0 = UP, exit 1 = anything else, said on its last line)
# with ZDU_ACTION, ZDU_NODE_NAME, ZDU_NODE_HOST, ZDU_NODE_PORT, ZDU_NODE_GROUP and ZDU_LB_SERVER
# in the environment.  Exit 0 = done; anything else = the action failed (zdupgrade then
# asks its rollback policy).  It must finish within the hook's `timeout`.
#
# This one drives HAProxy's runtime API with socat: drain, wait for sessions to end, maint;
# ready, wait until the health check says UP.  Settings come from the environment
# (put them under `load_balancer.env` in the topology):
#   HAPROXY_SOCKET  (default /run/haproxy/admin.sock)   HAPROXY_BACKEND (default gateways)
#   HAPROXY_WAIT    seconds to wait for drain / UP (default 30)
# For production prefer the built-in `type: haproxy` hook, which also drives HA pairs.
set -eu
action=${1:?usage: $0 disable|enable|healthy NODE}
server=${ZDU_LB_SERVER:-${2:?node name}}
sock=${HAPROXY_SOCKET:-/run/haproxy/admin.sock}
backend=${HAPROXY_BACKEND:-gateways}
tries=$(( ${HAPROXY_WAIT:-30} * 10 ))

api() { printf '%s\n' "$1" | socat stdio "UNIX-CONNECT:$sock"; }
# field NAME: the column NAME of this server's row in `show stat`
field() {
  api "show stat" | awk -F, -v b="$backend" -v s="$server" -v f="$1" \
    'NR==1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == f) c = i }
     $1 == b && $2 == s { print $c }'
}

[ -n "$(field status)" ] || { echo "HAProxy has no server $backend/$server" >&2; exit 2; }
case "$action" in
  disable)
    api "set server $backend/$server state drain" >/dev/null
    i=0; while [ "$(field scur)" != 0 ] && [ $i -lt $tries ]; do sleep 0.1; i=$((i + 1)); done
    left=$(field scur)
    api "set server $backend/$server state maint" >/dev/null
    [ "$left" = 0 ] || echo "drain deadline passed: $left session(s) cut" >&2
    ;;
  enable)
    api "set server $backend/$server state ready" >/dev/null
    i=0; while [ "$(field status)" != UP ] && [ $i -lt $tries ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(field status)" = UP ] || { echo "$backend/$server not UP after ${HAPROXY_WAIT:-30}s" >&2; exit 1; }
    ;;
  healthy)
    now=$(field status)
    case "$now" in UP|"UP "*|"no check") ;; *) echo "$backend/$server $now"; exit 1 ;; esac
    ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
