#!/usr/bin/env bash
# Start a throwaway single-node Slurm cluster with accounting on this machine (issue 6), for the tests
# marked `slurm`: MUNGE -> MariaDB -> slurmdbd -> slurmctld -> slurmd, all as root, all on 127.0.0.1.
#
# Everything (configs, MUNGE key and socket, database files, spool, logs) lives under one directory,
# $IL6AXIS_SLURM_ROOT (default /tmp/il6axis-slurm). The one file outside it is the symlink
# /etc/slurm/slurm.conf -> $ROOT/etc/slurm.conf: the SLURM executor's job step plugin strips every SLURM_*
# variable but a few job IDs (so SLURM_CONF as well) before its `srun` inside the job, so that srun only
# finds the cluster at Slurm's compiled-in default path, as on a real cluster's compute nodes. stop.sh
# removes the symlink (a slurm.conf left behind with no controller running makes every later Snakemake
# call wait ~10 s: the SLURM executor plugin runs `scontrol show config` when it is loaded). Client tools
# outside jobs may use SLURM_CONF from $ROOT/env.sh instead.
#
# Every daemon's PID goes to $ROOT/state/<daemon>.pid and every file written outside $ROOT to
# $ROOT/state/files, so that stop.sh stops and removes only what this script started and wrote. The machine
# needs no systemd or cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none). Install the
# packages first with .ci/slurm/install.sh. Ports are picked free at start (see $ROOT/state/ports).
#
#     bash .ci/slurm/install.sh && bash .ci/slurm/start.sh   # ... tests ...   bash .ci/slurm/stop.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${IL6AXIS_SLURM_ROOT:-/tmp/il6axis-slurm}
STATE=$ROOT/state
ETC=$ROOT/etc
LOGS=$ROOT/log
RUN=$ROOT/run
CLUSTER=il6axis
ACCOUNT=il6axis
PARTITION=debug
NODE=$(hostname -s)
SYSTEM_CONF=/etc/slurm/slurm.conf
WAIT_SECONDS=${IL6AXIS_SLURM_WAIT:-120}

t0=$(date +%s)
say() { printf '[slurm start t=%ss] %s\n' "$(($(date +%s) - t0))" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "start.sh: must run as root (the daemons run as root in this throwaway cluster)" >&2
    exit 1
fi
for tool in munged mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sacctmgr sinfo sacct sbatch; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not found; run .ci/slurm/install.sh" >&2; exit 1; }
done

# A previous start left state behind (crashed CI, no stop): clean it up first so PIDs and ports are fresh.
if [ -e "$STATE/owner" ]; then
    say "previous cluster state in $ROOT: running stop.sh first"
    bash "$HERE/stop.sh"
fi
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    echo "start.sh: $SYSTEM_CONF exists and was not written by start.sh (another cluster's?); not replacing it" >&2
    exit 1
fi
if [ -e "$ROOT" ]; then
    echo "start.sh: $ROOT exists but was not made by start.sh; refusing to touch it" >&2
    exit 1
fi

mkdir -p "$STATE" "$ETC" "$LOGS" "$RUN" "$ROOT/munge" "$ROOT/mysql" "$ROOT/spool/ctld" "$ROOT/spool/d"
chmod 700 "$ROOT"
echo "il6axis .ci/slurm/start.sh $(date -Is)" >"$STATE/owner"
export SLURM_CONF=$ETC/slurm.conf

# On any failure: show the logs that explain it and stop whatever already started (unless
# IL6AXIS_SLURM_KEEP_ON_FAILURE=1, for debugging).
on_exit() {
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "start.sh: FAILED (exit $rc); last log lines:" >&2
        for log in "$LOGS"/*.log; do
            [ -f "$log" ] || continue
            echo "--- $log" >&2
            tail -n 15 "$log" >&2
        done
        if [ "${IL6AXIS_SLURM_KEEP_ON_FAILURE:-0}" = 1 ]; then
            echo "start.sh: IL6AXIS_SLURM_KEEP_ON_FAILURE=1: leaving $ROOT for inspection (stop.sh cleans up)" >&2
        else
            bash "$HERE/stop.sh" >&2 || true
        fi
    fi
}
trap on_exit EXIT

# Start a daemon in the foreground mode of its own session (setsid: a CI's process-group kill does not
# reach it, stop.sh does), output to a log, and record its PID.
launch() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

alive() { kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# wait_for DESCRIPTION DAEMON COMMAND...: poll COMMAND until it succeeds; fail early if DAEMON died.
wait_for() {
    local what=$1 daemon=$2
    shift 2
    local deadline=$(($(date +%s) + WAIT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$daemon" ] && ! alive "$daemon"; then
            echo "start.sh: $daemon exited while waiting for $what (see $LOGS/$daemon.log / .out)" >&2
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "start.sh: timed out after ${WAIT_SECONDS}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MYSQL_PORT=$(free_port)
DBD_PORT=$(free_port)
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
printf 'mysql=%s\nslurmdbd=%s\nslurmctld=%s\nslurmd=%s\n' "$MYSQL_PORT" "$DBD_PORT" "$CTLD_PORT" "$SLURMD_PORT" \
    >"$STATE/ports"

# Real resources of this machine; RealMemory a little below the total so slurmd never reports less than
# configured (which would drain the node).
CPUS=$(nproc)
MEM_TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MEMORY=$((MEM_TOTAL_MB * 95 / 100))
say "node $NODE: CPUs=$CPUS RealMemory=${REAL_MEMORY}MB; ports $(tr '\n' ' ' <"$STATE/ports")"

# --- MUNGE, with its own key and socket
MUNGE_SOCKET=$ROOT/munge/munge.socket.2
dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$ROOT/munge/munge.key"
launch munged munged --foreground --force --key-file="$ROOT/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$RUN/munged.pid" --log-file="$LOGS/munged.log" --seed-file="$ROOT/munge/munged.seed"
wait_for "munged" munged bash -c "munge --socket='$MUNGE_SOCKET' -n | unmunge --socket='$MUNGE_SOCKET'"
say "munged up"

# --- MariaDB: private data dir, TCP on 127.0.0.1 only, root through the unix socket
MYSQL_SOCKET=$ROOT/mysql/mysqld.sock
mariadb-install-db --no-defaults --user=root --datadir="$ROOT/mysql/data" --skip-test-db \
    --auth-root-authentication-method=socket >"$LOGS/mariadb-install-db.log" 2>&1
launch mariadbd mariadbd --no-defaults --user=root --datadir="$ROOT/mysql/data" --socket="$MYSQL_SOCKET" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --pid-file="$RUN/mariadbd.pid" \
    --log-error="$LOGS/mariadbd.log" --skip-name-resolve \
    --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M
wait_for "mariadbd" mariadbd mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -u root ping
DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
say "mariadb up (slurm_acct_db, user slurm)"

# --- Slurm configuration
cat >"$ETC/slurmdbd.conf" <<EOF
# Generated by .ci/slurm/start.sh (throwaway test cluster); removed by stop.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"

cat >"$ETC/slurm.conf" <<EOF
# Generated by .ci/slurm/start.sh (throwaway single-node test cluster); removed by stop.sh.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$ROOT/spool/ctld
SlurmdSpoolDir=$ROOT/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container-like VM without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
InactiveLimit=0
KillWait=10
Waittime=0
SlurmctldTimeout=60
SlurmdTimeout=60
# Accounting through slurmdbd, as on real clusters: sacct answers for finished jobs and jobs need a valid
# account (AccountingStorageEnforce=associations), so the executor's account handling is exercised too.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations
# Clients reach slurmdbd with MUNGE credentials from this socket (the default socket would be /run/munge).
AccountingStoragePass=$MUNGE_SOCKET
# Store sbatch --comment in the database: the executor puts rule and wildcards there (the job name is the
# run ID), which is how tests map sacct records to rules. Real clusters may not set this.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEMORY State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# Slurm's default config path, for srun inside jobs (see the header); recorded for stop.sh.
mkdir -p "$(dirname "$SYSTEM_CONF")"
ln -s "$ETC/slurm.conf" "$SYSTEM_CONF"
echo "$SYSTEM_CONF" >>"$STATE/files"

# --- slurmdbd, then the accounting records the controller needs (cluster, account, user root)
launch slurmdbd slurmdbd -D
wait_for "slurmdbd" slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="il6axis tests" Organization=il6axis >/dev/null
sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
say "slurmdbd up (cluster $CLUSTER, account $ACCOUNT, user root)"

# --- controller and compute daemon
launch slurmctld slurmctld -D -i
wait_for "slurmctld" slurmctld scontrol ping
launch slurmd slurmd -D -N "$NODE"
node_idle() { [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]; }
wait_for "node $NODE idle in sinfo" slurmd node_idle
say "slurmctld + slurmd up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB')"

# --- smoke test: one job through the scheduler, and its record through sacct (slurmdbd + MariaDB)
smoke_id=$(sbatch --parsable -A "$ACCOUNT" -p "$PARTITION" -J il6axis-smoke -t 1 --mem 16 \
    -o /dev/null --wrap true)
smoke_done() { [ "$(sacct -n -X -P -j "$smoke_id" -o State 2>/dev/null)" = COMPLETED ]; }
wait_for "smoke job $smoke_id COMPLETED in sacct" slurmd smoke_done
say "smoke job $smoke_id COMPLETED in sacct"

cat >"$ROOT/env.sh" <<EOF
# Optional: the test cluster of .ci/slurm/start.sh is also reachable through /etc/slurm/slurm.conf.
export SLURM_CONF=$ETC/slurm.conf
EOF
say "cluster ready (config $SYSTEM_CONF -> $SLURM_CONF; logs in $LOGS); stop with .ci/slurm/stop.sh"
