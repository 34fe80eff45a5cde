#!/usr/bin/env bash
# Stop the test cluster started by .ci/slurm/start.sh and delete everything it wrote. Idempotent.
#
# Only touches what start.sh recorded: the daemons whose PIDs are in $ROOT/state/*.pid (and only if the
# process behind the PID is still that daemon), the job step daemons (slurmstepd) spawned for this
# cluster (recognised by SLURM_CONF pointing into $ROOT), the files listed in $ROOT/state/files (the
# /etc/slurm/slurm.conf symlink, while it still points into $ROOT), and the directory $ROOT itself, which is
# removed only when it carries start.sh's owner marker.
set -uo pipefail

ROOT=${IL6AXIS_SLURM_ROOT:-/tmp/il6axis-slurm}
STATE=$ROOT/state
SLURM_CONF_PATH=$ROOT/etc/slurm.conf
STOP_WAIT=${IL6AXIS_SLURM_STOP_WAIT:-30}

say() { printf '[slurm stop] %s\n' "$*"; }

if [ ! -e "$STATE/owner" ]; then
    if [ -e "$ROOT" ]; then
        say "$ROOT exists but has no start.sh owner marker; leaving it alone"
    else
        say "nothing to stop ($ROOT absent)"
    fi
    exit 0
fi

# PID recorded for a daemon, if that process is still alive and is still the program we started.
live_pid() {
    local name=$1 prog=$2 pidfile=$STATE/$1.pid pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$prog" ] || return 1
    echo "$pid"
}

stop_daemon() {
    local name=$1 prog=$2 pid waited=0
    pid=$(live_pid "$name" "$prog") || { rm -f "$STATE/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_WAIT * 2)) ]; do
        sleep 0.5
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored TERM for ${STOP_WAIT}s: KILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    say "stopped $name (pid $pid)"
    rm -f "$STATE/$name.pid"
}

# Job step daemons of this cluster: slurmstepd processes whose environment names our slurm.conf.
our_stepds() {
    local proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ] || continue
        tr '\0' '\n' <"$proc/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF_PATH" && echo "$pid"
    done
}

# Cancel jobs still queued or running (an interrupted test) while the controller is up, so their
# processes end through Slurm.
if live_pid slurmctld slurmctld >/dev/null && live_pid slurmd slurmd >/dev/null; then
    jobs=$(SLURM_CONF=$SLURM_CONF_PATH timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        SLURM_CONF=$SLURM_CONF_PATH timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 1 40); do
            [ -z "$(SLURM_CONF=$SLURM_CONF_PATH timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# Reverse start order: compute daemon, controller, accounting, database, authentication.
# All descendants of a process (job scripts under a slurmstepd: proctrack/linuxproc tracks them by parentage).
descendants() {
    ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            keep[root] = 1
            do { added = 0
                 for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; added = 1 } }
            } while (added)
            for (p in keep) if (p != root) print p
        }'
}

stop_daemon slurmd slurmd
# A step daemon outlives slurmd when its job could not be cancelled (controller already gone): kill the
# job's processes, then the step daemon.
for pid in $(our_stepds); do
    kids=$(descendants "$pid" | tr '\n' ' ')
    say "killing leftover slurmstepd $pid and its processes: ${kids:-none}"
    # shellcheck disable=SC2086
    [ -n "${kids// /}" ] && kill -KILL $kids 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
done
stop_daemon slurmctld slurmctld
stop_daemon slurmdbd slurmdbd
stop_daemon mariadbd mariadbd
stop_daemon munged munged

# Files written outside $ROOT (the /etc/slurm/slurm.conf symlink): removed only while they still point
# into $ROOT, so a file someone else put there meanwhile stays.
if [ -f "$STATE/files" ]; then
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        if [ -L "$path" ] && [[ "$(readlink "$path")" == "$ROOT"/* ]]; then
            rm -f "$path"
            say "removed $path"
        elif [ -e "$path" ]; then
            say "left $path alone: no longer our symlink"
        fi
    done <"$STATE/files"
fi

remaining=$(ls "$STATE"/*.pid 2>/dev/null)
if [ -n "$remaining" ]; then
    say "unexpected pid files left: $remaining"
fi
rm -rf "$ROOT"
say "removed $ROOT"
