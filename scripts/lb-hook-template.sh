#!/bin/sh
# Skeleton of a zdupgrade load-balancer hook: fill in the two cases for your balancer
# (F5, NGINX Plus, a cloud target group...).  Called as:  HOOK disable|enable NODE
# Environment: ZDU_ACTION ZDU_NODE_NAME ZDU_NODE_HOST ZDU_NODE_PORT ZDU_NODE_GROUP ZDU_LB_SERVER
# Exit 0 when the action is complete (disable: no request in flight any more; enable: the
# balancer sees the node healthy and sends it traffic).  Non-zero fails the action.
# With `healthy: true` under the topology's load_balancer it is also called  HOOK healthy NODE
# (read-only, before each wave and at the end): exit 0 = in rotation and healthy, exit 1 = not
# (print what the balancer shows on the last line); any other exit = the balancer cannot be read.
set -eu
case "${1:?usage: $0 disable|enable NODE}" in
  disable) echo "would take $ZDU_LB_SERVER ($ZDU_NODE_HOST) out of traffic and wait for it to drain" ;;
  enable)  echo "would put $ZDU_LB_SERVER ($ZDU_NODE_HOST) back and wait until it is healthy" ;;
  healthy) echo "would ask whether $ZDU_LB_SERVER is in rotation and healthy; says it is" ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
