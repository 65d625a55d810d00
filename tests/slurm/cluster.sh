#!/usr/bin/env bash
# A real single-node SLURM cluster for the end-to-end tests in tests/slurm/.
#
#   tests/slurm/cluster.sh start    install (apt) if needed, configure, start, wait until the node is idle
#   tests/slurm/cluster.sh stop     stop every daemon this script started, by the PIDs in their pid files
#   tests/slurm/cluster.sh status   print the daemons and sinfo; exit 0 when the cluster is up
#
# Exit codes:
#   0  done (for start/stop also when the machine is not one this script may touch: it then prints
#      "skipped: <reason>" and changes nothing; the SLURM tests skip with the same reason)
#   1  the cluster failed to come up / to stop (the daemon logs are printed), or `status` found it down
#   2  usage error
#
# Stack (Debian/Ubuntu packages): munge (auth), mariadb + slurmdbd (accounting, so that `sacct` works),
# slurmctld + slurmd on this host. There is no systemd in CI containers, so the daemons are started
# by hand as root. Nothing here is meant for a real cluster: the script refuses to overwrite a
# slurm.conf it did not write.
set -euo pipefail

readonly MARKER="# written by tests/slurm/cluster.sh (single-node test cluster of ssl-vit-repro)"
readonly CLUSTER_NAME=local
readonly PARTITION=debug
readonly CONF_DIR=/etc/slurm
readonly SLURM_CONF=$CONF_DIR/slurm.conf
readonly DBD_CONF=$CONF_DIR/slurmdbd.conf
readonly RUN_DIR=/run/slurm
readonly LOG_DIR=/var/log/slurm
readonly CTLD_STATE=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly MYSQL_RUN=/run/mysqld
readonly MYSQL_PID=$MYSQL_RUN/mariadbd-slurm-ci.pid
readonly MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
readonly MUNGE_PID=/run/munge/munged.pid
# Daemons this script started (one name per line); `stop` touches only those.
readonly OWNED=$RUN_DIR/cluster-sh.owned
readonly DBD_PORT=6819
readonly DB_NAME=slurm_acct_db
readonly DB_USER=slurm
readonly PACKAGES="slurm-wlm munge slurmdbd mariadb-server"
# How long `start` waits for the node to register as idle (env SLURM_CLUSTER_START_TIMEOUT).
readonly START_TIMEOUT_S=${SLURM_CLUSTER_START_TIMEOUT:-60}

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- guards
# Prints the reason this machine must not be touched, or nothing.
refusal_reason() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "not root (the daemons and /etc/slurm need root; run as root or skip the SLURM tests)"
        return
    fi
    local id="" id_like=""
    if [[ -r /etc/os-release ]]; then
        # shellcheck source=/dev/null
        id=$(. /etc/os-release && echo "${ID:-}")
        # shellcheck source=/dev/null
        id_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
    fi
    if [[ " $id $id_like " != *" debian "* && " $id $id_like " != *" ubuntu "* ]]; then
        echo "not Debian/Ubuntu (ID=${id:-unknown}); the script installs slurm-wlm with apt-get"
        return
    fi
    if [[ -e $SLURM_CONF ]] && ! head -n1 "$SLURM_CONF" | grep -qxF "$MARKER"; then
        echo "$SLURM_CONF exists and was not written by this script (a real cluster?); not touching it"
        return
    fi
}

# ---------------------------------------------------------------- helpers
pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# daemon_pid NAME PIDFILE: the PID in the file if that process runs and is NAME (a stale pid
# file whose number was reused by another process must not get it killed).
daemon_pid() {
    local pid=""
    [[ -r $2 ]] && pid=$(tr -dc '0-9' <"$2")
    if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]; then echo "$pid"; fi
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
own() { grep -qxF "$1" "$OWNED" 2>/dev/null || echo "$1" >>"$OWNED"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

show_logs() {
    local f
    for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log "$LOG_DIR"/slurmdbd.log "$LOG_DIR"/mariadbd.log; do
        [[ -s $f ]] || continue
        echo "----- last lines of $f" >&2
        tail -n 25 "$f" >&2
    done
}

fail_start() { log "error: $*"; show_logs; exit 1; }

queue_empty() { [[ -z $(squeue --noheader --format=%i) ]]; }
node_state() { sinfo --noheader --nodes="$(hostname -s)" --format=%T 2>/dev/null | head -n1; }
node_idle() { [[ $(node_state) == idle ]]; }
node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

# ---------------------------------------------------------------- install + configure
install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd slurmdbd munged mariadbd sbatch sacct sacctmgr; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    log "installing $PACKAGES (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

# The node line: topology from `slurmd -C` (what slurmd will register), memory with headroom so that
# the daemons and the submitting process keep room (slurmd drains a node that reports less memory
# than configured).
node_line() {
    local node=$1 probe cpus boards sockets cores threads mem_mb real_mb
    probe=$(slurmd -C | head -n1)
    field() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$probe"; }
    cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); mem_mb=$(field RealMemory)
    [[ -n $cpus && -n $mem_mb ]] || die "cannot read the node's CPUs/memory from 'slurmd -C': $probe"
    real_mb=$((mem_mb - (mem_mb / 10 > 1024 ? mem_mb / 10 : 1024)))
    echo "NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets" \
        "CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$real_mb State=UNKNOWN"
}

write_slurm_conf() {
    local node=$1 line
    line=$(node_line "$node")
    local tmp=$SLURM_CONF.tmp
    cat >"$tmp" <<EOF
$MARKER
ClusterName=$CLUSTER_NAME
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s);
# a preempted test job comes back after about 10 s.
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups in containers: track processes by parent PID, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
# A test cluster schedules within seconds: pending jobs are retried every 2 s instead of 60/30 s.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job without --mem would take the whole node's memory and array tasks
# would run one at a time.
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
ReturnToService=2
InactiveLimit=0
# Finished jobs stay visible to squeue/scontrol for 5 minutes (sacct keeps them for ever).
MinJobAge=300
KillWait=10
Waittime=0
SlurmdTimeout=60
$line
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    mv -f "$tmp" "$SLURM_CONF"
}

# The storage password lives only in slurmdbd.conf (mode 600); it is kept across restarts.
db_password() {
    local pw=""
    [[ -r $DBD_CONF ]] && pw=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
    [[ -n $pw ]] || pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    echo "$pw"
}

write_slurmdbd_conf() {
    local pw=$1
    local tmp=$DBD_CONF.tmp
    (
        umask 077
        cat >"$tmp" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$pw
EOF
    )
    chmod 600 "$tmp"
    mv -f "$tmp" "$DBD_CONF"
}

# ---------------------------------------------------------------- daemons
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then return 0; fi
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    own munged
    wait_for 10 munge munge_works || fail_start "munged did not start"
}

mysql_ping() { mariadb-admin --socket="$MYSQL_SOCK" ping; }

start_mariadb() {
    if ! mysql_ping >/dev/null 2>&1; then
        install -d -o mysql -g mysql -m 0755 "$MYSQL_RUN"
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        fi
        setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 \
            --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
            --log-error="$LOG_DIR/mariadbd.log" </dev/null >/dev/null 2>&1 &
        own mariadbd
        wait_for 30 "mariadbd" mysql_ping || fail_start "mariadbd did not start"
    fi
    local pw=$1
    # Job ids restart at 1 with a fresh slurmctld state, so the accounting of an earlier cluster
    # would mix with this one's in sacct: the database starts empty too.
    mariadb --socket="$MYSQL_SOCK" <<EOF
DROP DATABASE IF EXISTS $DB_NAME;
CREATE DATABASE $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm_daemons() {
    slurmdbd
    own slurmdbd
    wait_for 30 "slurmdbd on port $DBD_PORT" port_open "$DBD_PORT" || fail_start "slurmdbd did not start"
    # Register the cluster before slurmctld connects, so accounting starts with its first job.
    if ! sacctmgr --noheader --parsable2 show cluster format=cluster | grep -qxF "$CLUSTER_NAME"; then
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
    fi
    slurmctld
    own slurmctld
    wait_for 20 "slurmctld" scontrol ping || fail_start "slurmctld did not answer 'scontrol ping'"
    slurmd
    own slurmd
    wait_for "$START_TIMEOUT_S" "node $(hostname -s) to be idle in sinfo" node_idle ||
        fail_start "the node did not become idle (sinfo: $(sinfo 2>&1 | tr '\n' ' '))"
}

slurm_daemons_alive() {
    local name
    for name in slurmdbd slurmctld slurmd; do
        [[ -n $(daemon_pid "$name" "$RUN_DIR/$name.pid") ]] || return 1
    done
}

# sinfo alone is not enough: a dead slurmd is reported idle until SlurmdTimeout.
cluster_up() {
    slurm_daemons_alive && munge_works && mysql_ping >/dev/null 2>&1 &&
        scontrol ping >/dev/null 2>&1 && node_usable &&
        sacctmgr --noheader show cluster format=cluster >/dev/null 2>&1
}

# ---------------------------------------------------------------- commands
cmd_start() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 0; fi
    if [[ -f $SLURM_CONF ]] && command -v sinfo >/dev/null && cluster_up; then
        echo "already up: node $(hostname -s) is $(node_state)"
        return 0
    fi
    local t0=$SECONDS
    # A package's postinst may start its daemon (where policy-rc.d allows it); one that appears
    # during the install is this script's to manage, so it is stopped and started our way.
    local -A ran_before=()
    local name
    for name in munged mariadbd; do pgrep -x "$name" >/dev/null && ran_before[$name]=1; done
    install_packages
    local -A default_pidfile=([munged]=$MUNGE_PID [mariadbd]=$MYSQL_RUN/mysqld.pid)
    for name in munged mariadbd; do
        if [[ -z ${ran_before[$name]:-} ]] && pgrep -x "$name" >/dev/null; then
            stop_pids "$name:${default_pidfile[$name]}"
        fi
    done
    # Half-started leftovers (a crashed daemon, a previous failed start) are stopped first.
    cmd_stop >/dev/null
    install -d -m 0755 "$RUN_DIR" "$LOG_DIR" "$SLURMD_SPOOL" "$CONF_DIR"
    # slurmctld restores old jobs from its state directory: a test cluster starts empty.
    rm -rf "$CTLD_STATE"
    install -d -m 0755 "$CTLD_STATE"
    rm -rf "${SLURMD_SPOOL:?}"/*
    local f
    for f in slurmctld slurmd slurmdbd mariadbd; do : >"$LOG_DIR/$f.log"; done

    local node pw
    node=$(hostname -s)
    pw=$(db_password)
    write_slurm_conf "$node"
    write_slurmdbd_conf "$pw"
    : >"$OWNED"
    start_munge
    start_mariadb "$pw"
    start_slurm_daemons
    echo "up in $((SECONDS - t0))s: node $node is $(node_state); partition $PARTITION; logs in $LOG_DIR"
}

# stop_pids NAME:PIDFILE...: TERM to all at once (each daemon takes ~2 s to shut down), wait up to
# 15 s, then KILL the ones still alive.
stop_pids() {
    local spec name pid pids=() names=()
    for spec in "$@"; do
        name=${spec%%:*}
        pid=$(daemon_pid "$name" "${spec#*:}")
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid"); names+=("$name")
    done
    local deadline=$((SECONDS + 15)) i alive
    while ((SECONDS < deadline)); do
        alive=0
        for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        pid_alive "${pids[$i]}" || continue
        log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM; sending SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
    done
    sleep 0.2
}

cmd_stop() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 0; fi
    [[ -f $SLURM_CONF ]] || { echo "nothing to stop"; return 0; }
    # Cancel jobs first so that their steps end under slurmd's control.
    if [[ -n $(daemon_pid slurmctld "$RUN_DIR/slurmctld.pid") ]] &&
        [[ -n $(squeue --noheader --format=%i 2>/dev/null) ]]; then
        scancel --full --partition="$PARTITION" 2>/dev/null || true
        wait_for 15 "jobs to end" queue_empty || true
    fi
    stop_pids "slurmd:$RUN_DIR/slurmd.pid" "slurmctld:$RUN_DIR/slurmctld.pid"
    # The job steps' slurmstepd processes belong to this cluster; any left after slurmd stopped
    # are orphans of a killed job.
    local pid
    for pid in $(pgrep -x slurmstepd || true); do kill -KILL "$pid" 2>/dev/null || true; done
    # mariadb and munge may have been running before us (another service uses them): stop them
    # only if this script started them.
    local services=("slurmdbd:$RUN_DIR/slurmdbd.pid")
    grep -qxF mariadbd "$OWNED" 2>/dev/null && services+=("mariadbd:$MYSQL_PID")
    grep -qxF munged "$OWNED" 2>/dev/null && services+=("munged:$MUNGE_PID")
    stop_pids "${services[@]}"
    rm -f "$OWNED"
    local left="" name
    for name in slurmd slurmctld slurmdbd slurmstepd; do
        pgrep -x "$name" >/dev/null && left+=" $name"
    done
    [[ -z $left ]] || die "still running after stop:$left"
    echo "stopped"
}

cmd_status() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 1; fi
    local name pidfile pid
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        case $name in
            munged) pidfile=$MUNGE_PID ;;
            mariadbd) pidfile=$MYSQL_PID ;;
            *) pidfile=$RUN_DIR/$name.pid ;;
        esac
        pid=$(daemon_pid "$name" "$pidfile")
        if [[ -n $pid ]]; then printf '%-10s running (pid %s)\n' "$name" "$pid"
        else printf '%-10s not running\n' "$name"; fi
    done
    if command -v sinfo >/dev/null && [[ -f $SLURM_CONF ]] && cluster_up; then
        sinfo
        echo "up"
        return 0
    fi
    echo "down"
    return 1
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
