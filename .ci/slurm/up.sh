#!/usr/bin/env bash
# Start a real one-node SLURM cluster (with accounting: munge, MariaDB, slurmdbd, slurmctld,
# slurmd) as plain daemons, no systemd. PIDs go to $STATE/pids; .ci/slurm/down.sh stops them.
# Usage: .ci/slurm/up.sh STATE_DIR
set -euo pipefail
STATE=${1:?usage: up.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
chmod 0755 "$STATE"  # daemons running as mysql/slurm/munge must reach their files in it
: > "$STATE/pids"
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
   || ! command -v mariadbd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "slurm-up: $what did not come up in ${t}s" >&2; return 1
}

# munge: authentication between the daemons and the clients
mkdir -p /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
runuser -u munge -- munged --pid-file=/run/munge/munged.pid
wait_for 20 munged test -s /run/munge/munged.pid
cat /run/munge/munged.pid >> "$STATE/pids"; echo >> "$STATE/pids"

# MariaDB for slurmdbd (accounting, so that sacct works as on a real cluster)
mkdir -p "$STATE/mysql" /run/mysqld; chown mysql:mysql "$STATE/mysql" /run/mysqld
mariadb-install-db --user=mysql --datadir="$STATE/mysql" >/dev/null
mariadbd --user=mysql --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock \
  --pid-file=/run/mysqld/mysqld.pid --skip-networking=0 --bind-address=127.0.0.1 --port=3306 \
  >"$STATE/mysqld.log" 2>&1 &
wait_for 60 mariadbd mariadb --socket=/run/mysqld/mysqld.sock -e 'select 1'
cat /run/mysqld/mysqld.pid >> "$STATE/pids"; echo >> "$STATE/pids"
mariadb --socket=/run/mysqld/mysqld.sock -e "
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$STATE/run"
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmci
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf "$STATE/run"; chmod 0600 /etc/slurm/slurmdbd.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
slurmdbd
wait_for 30 slurmdbd test -s "$STATE/run/slurmdbd.pid"
cat "$STATE/run/slurmdbd.pid" >> "$STATE/pids"; echo >> "$STATE/pids"
wait_for 30 "slurmdbd (sacctmgr)" sacctmgr -i list cluster
sacctmgr -i add cluster ci >/dev/null || true
sacctmgr -i add account ci Cluster=ci Description=ci Organization=ci >/dev/null || true
sacctmgr -i add user root Account=ci >/dev/null || true
slurmctld
wait_for 30 slurmctld test -s "$STATE/run/slurmctld.pid"
cat "$STATE/run/slurmctld.pid" >> "$STATE/pids"; echo >> "$STATE/pids"
slurmd
wait_for 30 slurmd test -s "$STATE/run/slurmd.pid"
cat "$STATE/run/slurmd.pid" >> "$STATE/pids"; echo >> "$STATE/pids"
wait_for 60 "node $HOST (idle)" bash -c "sinfo -h -o %T | grep -qx idle"
sinfo
