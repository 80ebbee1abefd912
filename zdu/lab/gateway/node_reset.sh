#!/bin/sh
# Put a lab node back to its initial state: no faults, no hung gateway commands, gateway 2.0
# stopped and unconfigured, gateway 1.0 running, sshd running.  Idempotent.
set -u
ip=$(cat /etc/gateway/host)
rm -f /etc/gateway/faults
# the [y] keeps pkill from matching the shell that runs this script
pkill -KILL -f '/opt/gateway-[0-9.]+/bin/gatewa[y] (export|upgrade|check|start|stop|status)' 2>/dev/null
/opt/gateway-2.0/bin/gateway stop --timeout 5 >/dev/null
rm -f /opt/gateway-2.0/conf/gateway.json /opt/gateway-2.0/conf/gateway.json.tmp
rm -rf /var/tmp/zdupgrade
if ! /opt/gateway-1.0/bin/gateway status >/dev/null; then
    /opt/gateway-1.0/bin/gateway start --host "$ip" || exit 1
fi
if [ "$(cat "/proc/$(cat /run/sshd-zdu.pid 2>/dev/null)/comm" 2>/dev/null)" != sshd ]; then
    /usr/sbin/sshd -f /etc/ssh/sshd_config_zdu -E /var/log/sshd.log || exit 1
fi
echo reset
