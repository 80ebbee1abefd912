#!/bin/sh
# PID 1 of a lab node for an instant: prepare what systemd needs in a container, then exec it.
#
# Docker mounts the cgroup hierarchies read-only in a container that is not --privileged (and
# --privileged is refused on this host: dockerd lacks CAP_SYS_RESOURCE).  In the container's own
# cgroup namespace a fresh mount of a hierarchy shows only the container's subtree, so systemd
# gets a writable name=systemd hierarchy (cgroup v1) or unified hierarchy (cgroup v2) of its own
# without seeing or touching the host's.
set -u
fstype=$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || echo none)
if [ "$fstype" = cgroup2fs ]; then
    umount /sys/fs/cgroup 2>/dev/null && mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
elif [ -d /sys/fs/cgroup/systemd ]; then
    umount /sys/fs/cgroup/systemd 2>/dev/null &&
        mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup /sys/fs/cgroup/systemd
fi || echo "zdu-boot: could not remount the cgroup hierarchy read-write; systemd may fail" >&2
# the node's identity for the units (systemd does not hand its own environment to services)
env | grep '^ZDU_' > /etc/zdu-node.env
# one machine id per node, kept across restarts of the container (journald names its files by it)
[ -s /etc/machine-id ] || tr -d '-' < /proc/sys/kernel/random/uuid > /etc/machine-id
exec /lib/systemd/systemd
