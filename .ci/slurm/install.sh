#!/usr/bin/env bash
# Install the Debian packages of a single-node Slurm cluster with accounting (issue 6): Slurm 22.05
# (controller, compute daemon, client tools, accounting daemon), MUNGE authentication and MariaDB for
# slurmdbd. Idempotent: packages already present are not fetched again. Must run as root.
#
# Package post-install scripts must not start system-wide daemons (munge, mariadb, slurm*): start.sh runs
# its own instances under one private directory and stop.sh must be able to remove everything. So a
# policy-rc.d that forbids service starts is put in place for the install, unless one already exists, and
# removed again afterwards.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must run as root (apt-get)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install.sh: already installed: ${PACKAGES[*]}"
    exit 0
fi
echo "install.sh: installing ${missing[*]}"

policy=/usr/sbin/policy-rc.d
wrote_policy=0
cleanup() {
    if [ "$wrote_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary (il6axis .ci/slurm/install.sh): no service starts during install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    wrote_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for tool in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db; do
    command -v "$tool" >/dev/null || { echo "install.sh: $tool missing after install" >&2; exit 1; }
done
echo "install.sh: $(slurmctld -V), munge $(dpkg-query -W -f='${Version}' munge)," \
    "mariadb $(dpkg-query -W -f='${Version}' mariadb-server)"
