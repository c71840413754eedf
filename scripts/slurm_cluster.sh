#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests of the slurm backend (tests/test_slurm.py) and
# for trying `--backend slurm` without a cluster. As root; Debian's slurm-wlm and munge (installed here with
# apt-get when missing). No systemd: the daemons are started by hand and stopped by their pid files.
#
#   bash scripts/slurm_cluster.sh start   # install if needed, write the config, start munged, slurmctld, slurmd
#   bash scripts/slurm_cluster.sh stop    # stop the daemons this script started
#   bash scripts/slurm_cluster.sh status  # sinfo
#
# Partitions: `debug` (default) and `short`, both on this node. State lives under $SLURM_TEST_DIR
# (default /tmp/fer-slurm).
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/fer-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-wlm and munge are missing; as root: apt-get install -y --no-install-recommends slurm-wlm munge" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start() {
    install
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge "$DIR/ctld" "$DIR/d" /etc/slurm
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then su -s /bin/sh munge -c /usr/sbin/munged; fi
    local mem
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    cat > "$CONF" <<CONF
ClusterName=ferlab
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
NodeName=$HOST CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=$HOST MaxTime=60 State=UP
CONF
    if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
    if ! pgrep -x slurmd >/dev/null; then slurmd; fi
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then sinfo; return; fi
        sleep 0.5
    done
    echo "the SLURM node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
    exit 1
}

stop() {
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
        if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
