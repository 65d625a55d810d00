#!/usr/bin/env bash
# A throwaway SSH server on 127.0.0.1 for the DVC SSH-remote tests in tests/dvc/.
#
#   tests/dvc/sshd.sh start     install openssh-server (apt) if needed, make keys, start sshd, check a login
#   tests/dvc/sshd.sh stop      stop the sshd this script started (by the PID in its pid file), delete its state
#   tests/dvc/sshd.sh status    print how to connect; exit 0 when the server is up and accepts the key
#
# Exit codes:
#   0  done (for start/stop also when the machine is not one this script may touch: it then prints
#      "skipped: <reason>" and changes nothing; the `dvcremote` tests skip with the same reason)
#   1  the server failed to start / to stop (its log is printed), or `status` found it down
#   2  usage error
#
# Everything lives in one state directory (env SSHD_STATE_DIR, default /run/ssl-vit-test-sshd,
# root-owned so that sshd's StrictModes accepts it): a fresh host key, a client key pair whose
# public half is the only authorised key (for root, through AuthorizedKeysFile: ~root/.ssh is
# not touched), sshd_config, the pid file, the log, and `env`, which the tests source:
#   SSHD_HOST SSHD_PORT SSHD_USER SSHD_KEY SSHD_KNOWN_HOSTS
# The server listens on 127.0.0.1 only, on a free high port, with public-key auth only.
set -euo pipefail

readonly STATE=${SSHD_STATE_DIR:-/run/ssl-vit-test-sshd}
readonly CONFIG=$STATE/sshd_config
readonly PIDFILE=$STATE/sshd.pid
readonly LOG=$STATE/sshd.log
readonly ENV_FILE=$STATE/env
readonly HOST=127.0.0.1
readonly USER_NAME=root
readonly SSHD=/usr/sbin/sshd

log() { echo "sshd.sh: $*" >&2; }

# Prints the reason this machine must not be touched, or nothing.
refusal_reason() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "not root (apt-get and a root login to localhost need root; run as root or skip the dvcremote tests)"
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
        echo "not Debian/Ubuntu (ID=${id:-unknown}); the script installs openssh-server with apt-get"
    fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

free_port() {
    local port tries
    for tries in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" || { echo "$port"; return 0; }
    done
    log "error: no free port found in 50 tries"
    return 1
}

# The PID in the pid file if that process runs and is sshd (a reused PID is never killed).
server_pid() {
    local pid=""
    [[ -r $PIDFILE ]] && pid=$(tr -dc '0-9' <"$PIDFILE")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == sshd ]]; then
        echo "$pid"
    fi
}

# One real login with the client key, host key checked against our known_hosts.
login_works() {
    # shellcheck source=/dev/null
    [[ -r $ENV_FILE ]] && (. "$ENV_FILE" && ssh -i "$SSHD_KEY" -p "$SSHD_PORT" -o BatchMode=yes \
        -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$SSHD_KNOWN_HOSTS" \
        -o ConnectTimeout=5 "$SSHD_USER@$SSHD_HOST" true) >/dev/null 2>&1
}

install_packages() {
    [[ -x $SSHD ]] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && return 0
    log "installing openssh-server openssh-client (apt-get)"
    local before
    before=$(pgrep -x sshd || true)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
    # Where policy-rc.d allows it, the package's postinst starts the system sshd on port 22:
    # this script installed it, so it stops it again (an sshd that ran before is left alone).
    local pid
    for pid in $(pgrep -x sshd || true); do
        grep -qxF "$pid" <<<"$before" || kill -TERM "$pid" 2>/dev/null || true
    done
}

write_config() {
    local port=$1
    cat >"$CONFIG" <<EOF
# written by tests/dvc/sshd.sh: test server for the DVC SSH remote, localhost only
ListenAddress $HOST
Port $port
HostKey $STATE/host_ed25519
PidFile $PIDFILE
AuthorizedKeysFile $STATE/authorized_keys
AllowUsers $USER_NAME
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
EOF
}

cmd_start() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 0; fi
    if [[ -n $(server_pid) ]] && login_works; then
        echo "already up: $(connect_line)"
        return 0
    fi
    install_packages
    cmd_stop >/dev/null  # leftovers of an earlier start
    install -d -m 0700 "$STATE"
    install -d -m 0755 /run/sshd  # sshd's privilege separation directory
    ssh-keygen -q -t ed25519 -N "" -C "ssl-vit test host" -f "$STATE/host_ed25519"
    ssh-keygen -q -t ed25519 -N "" -C "ssl-vit dvc test client" -f "$STATE/client_ed25519"
    install -m 0600 "$STATE/client_ed25519.pub" "$STATE/authorized_keys"
    local port
    port=$(free_port)
    write_config "$port"
    echo "[$HOST]:$port $(cut -d' ' -f1-2 "$STATE/host_ed25519.pub")" >"$STATE/known_hosts"
    cat >"$ENV_FILE" <<EOF
SSHD_HOST=$HOST
SSHD_PORT=$port
SSHD_USER=$USER_NAME
SSHD_KEY=$STATE/client_ed25519
SSHD_KNOWN_HOSTS=$STATE/known_hosts
EOF
    "$SSHD" -t -f "$CONFIG" || { log "error: sshd rejected $CONFIG"; exit 1; }
    "$SSHD" -f "$CONFIG" -E "$LOG"
    local deadline=$((SECONDS + 20))
    until login_works; do
        if ((SECONDS >= deadline)); then
            log "error: no key login to $HOST:$port within 20 s"
            [[ -s $LOG ]] && tail -n 25 "$LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "up: $(connect_line)"
}

connect_line() {
    # shellcheck source=/dev/null
    (. "$ENV_FILE" && echo "ssh -i $SSHD_KEY -p $SSHD_PORT -o UserKnownHostsFile=$SSHD_KNOWN_HOSTS" \
        "$SSHD_USER@$SSHD_HOST (settings in $ENV_FILE)")
}

cmd_stop() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 0; fi
    [[ -d $STATE ]] || { echo "nothing to stop"; return 0; }
    local pid
    pid=$(server_pid)
    if [[ -n $pid ]]; then
        kill -TERM "$pid"
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null; do
            ((SECONDS < deadline)) || { log "error: sshd (pid $pid) still running after SIGTERM"; exit 1; }
            sleep 0.1
        done
    fi
    rm -rf "$STATE"
    echo "stopped"
}

cmd_status() {
    local reason
    reason=$(refusal_reason)
    if [[ -n $reason ]]; then echo "skipped: $reason"; return 1; fi
    local pid
    pid=$(server_pid)
    if [[ -n $pid ]] && login_works; then
        echo "sshd running (pid $pid)"
        echo "up: $(connect_line)"
        return 0
    fi
    if [[ -n $pid ]]; then echo "sshd running (pid $pid) but the key login fails"; else echo "sshd not running"; fi
    echo "down"
    return 1
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
