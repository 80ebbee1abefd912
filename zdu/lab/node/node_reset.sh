#!/bin/sh
# Put a lab node back to its initial state: no faults, no cache membership, no hung gateway
# commands, gateway 2.0 stopped, unconfigured and without its log, gateway 1.0 running (unless
# the lab runs a product instead), sshd running, no failed units.  A product lab's own reset
# (/lab/product/product.sh reset) runs last.  Idempotent.
set -u
ip=$(cat /etc/gateway/host)
start_gateway=$(sed -n 's/^ZDU_START_GATEWAY=//p' /etc/zdu-node.env)
rm -f /etc/gateway/faults /etc/gateway/cluster /opt/gateway-2.0/logs/gateway.log
# the [y] keeps pkill from matching the shell that runs this script
pkill -KILL -f '/opt/gateway-[0-9.]+/bin/gatewa[y] (export|upgrade|check|start|stop|status)' 2>/dev/null
/opt/gateway-2.0/bin/gateway stop --timeout 5 >/dev/null
rm -f /opt/gateway-2.0/conf/gateway.json /opt/gateway-2.0/conf/gateway.json.tmp
rm -rf /var/tmp/zdupgrade
if [ "${start_gateway:-1}" = 1 ] && ! /opt/gateway-1.0/bin/gateway status >/dev/null; then
    /opt/gateway-1.0/bin/gateway start --host "$ip" || exit 1
fi
if ! systemctl is-active --quiet zdu-sshd.service; then
    systemctl start zdu-sshd.service || exit 1
fi
if [ -x /lab/product/product.sh ]; then
    /lab/product/product.sh reset || exit 1
fi
systemctl reset-failed
echo reset
