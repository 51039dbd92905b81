# shellcheck shell=bash
# Shared helpers of scripts/fleet/{up,down,scenario}. Source it; do not run it.
#
# The fleet lives on ONE private bridge and ONE private /16, fixed here:
#   bridge  br-dkf            10.213.0.1/16 (root namespace side)
#   git     10.213.0.10       ctl 10.213.0.11       rogue 10.213.0.12
#   mq1..3  10.213.0.21..23   srv01..srv99 10.213.0.101..199 (up to 99 servers: all
#   on 10.213.0.0/24); from 100 servers (bench/fleet.sh) the names have three digits,
#   srv001..srv500 on 10.213.1.10.. (200 per /24: 10.213.1-3.10..209)
# Network namespaces are named dkf-HOST; /etc/netns/dkf-HOST/ holds the host's
# hosts, hostname and (mqN) rabbitmq files. Only addresses on 10.213.0.0/16 are
# ever used. Everything else lives under the run dir ($DK_FLEET_RUN, default
# /run/dk-fleet), whose `marker` file lists every namespace, link, /etc/netns
# entry and process that `up` created; `down` removes exactly those.
# Nothing here interpolates data into a command string: argument vectors only.

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

FLEET_NET=10.213
FLEET_CIDR=$FLEET_NET.0.0/16
FLEET_PREFIXLEN=16
FLEET_MAX_SERVERS=500
FLEET_BRIDGE=br-dkf
FLEET_PREFIX=dkf-
FLEET_RUN="${DK_FLEET_RUN:-/run/dk-fleet}"
FLEET_MARKER="$FLEET_RUN/marker"
FLEET_MARKER_HEAD="# dk-fleet marker v1: what scripts/fleet/up created; scripts/fleet/down removes only these"
FLEET_BIN="${DK_FLEET_BIN:-${CARGO_TARGET_DIR:-$DK_ROOT/target}/debug}"
FLEET_VENV="${DK_FLEET_VENV:-$DK_ROOT/.dk-test/fleet-venv}"
FLEET_USER=fleet                 # the RabbitMQ user every client logs in as
FLEET_STOMP_PORT=61613
FLEET_METRICS_PORT=9464
FLEET_HEARTBEAT_MS="${DK_FLEET_HEARTBEAT_MS:-2000}"
FLEET_REPOS=(r1 r2 r3 r4 r5)
FLEET_BRANCHES=(main dev)
export LC_ALL=C

fleet_ns() { printf '%s%s' "$FLEET_PREFIX" "$1"; }

# fleet_addr HOST -> its address on the bridge
fleet_addr() {
    case "$1" in
        git) echo "$FLEET_NET.0.10" ;;
        ctl) echo "$FLEET_NET.0.11" ;;
        rogue) echo "$FLEET_NET.0.12" ;;
        mq[1-3]) echo "$FLEET_NET.0.$((20 + ${1#mq}))" ;;
        srv[0-9][0-9]) echo "$FLEET_NET.0.$((100 + 10#${1#srv}))" ;;
        srv[0-9][0-9][0-9]) local i=$((10#${1#srv} - 1)); echo "$FLEET_NET.$((1 + i / 200)).$((10 + i % 200))" ;;
        *) dk_die "fleet_addr: unknown host '$1'" ;;
    esac
}

# fleet_x HOST CMD...: run CMD (argument vector) inside HOST's namespace.
fleet_x() {
    local host="$1"; shift
    ip netns exec "$(fleet_ns "$host")" "$@"
}

# fleet_servers N -> srv01 .. srvNN (N <= 99), srv001 .. srvNNN (N >= 100): names sort as numbers
fleet_servers() {
    local i fmt='srv%02d\n'
    [ "$1" -le 99 ] || fmt='srv%03d\n'
    for ((i = 1; i <= $1; i++)); do printf "$fmt" "$i"; done
}

fleet_mark() { printf '%s\n' "$*" >>"$FLEET_MARKER"; }

# The start time of a process (clock ticks since boot, /proc/PID/stat field 22),
# recorded with each PID so that `down` never signals a recycled PID.
fleet_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # fields after the comm: state is field 3, so starttime (22) is word 20 here
    set -f
    # shellcheck disable=SC2086
    set -- $stat
    set +f
    printf '%s\n' "${20}"
}

# fleet_mark_pid PID HOST NAME: record a process we started.
fleet_mark_pid() {
    local st
    st=$(fleet_starttime "$1") || dk_die "process $1 ($2 $3) is gone right after its start; see $FLEET_RUN/hosts/$2/log/"
    fleet_mark pid "$1" "$st" "$2" "$3"
}

# fleet_spawn HOST NAME LOGFILE CMD...: start a daemon in HOST's namespace, in its
# own session (Ctrl-C in the calling terminal does not reach it), and record its PID.
fleet_spawn() {
    local host="$1" name="$2" log="$3"; shift 3
    setsid ip netns exec "$(fleet_ns "$host")" "$@" </dev/null >>"$log" 2>&1 &
    local pid=$!
    fleet_mark_pid "$pid" "$host" "$name"
    printf '%s\n' "$pid" >"$FLEET_RUN/hosts/$host/$name.pid"
}

# fleet_pid_alive PID STARTTIME: the very process we recorded is still there.
fleet_pid_alive() {
    local st
    st=$(fleet_starttime "$1") || return 1
    [ "$st" = "$2" ]
}

# fleet_wait_tcp SECONDS ADDR PORT: until a TCP connect succeeds (from the root namespace).
fleet_wait_tcp() {
    timeout "$1" bash -c 'until (exec 3<>"/dev/tcp/$0/$1") 2>/dev/null; do sleep 0.1; done' "$2" "$3"
}


# fleet_wait_healthy SECONDS HOST PORT: until /healthz answers status ok.
fleet_wait_healthy() {
    timeout "$1" bash -c 'until curl -fsS --max-time 2 "http://$0:$1/healthz" 2>/dev/null | grep -q "\"status\":\"ok\""; do sleep 0.2; done' \
        "$(fleet_addr "$2")" "$3"
}

# fleet_beam_pids HOST: PIDs of the Erlang VM(s) (beam.smp) running in HOST's namespace.
fleet_beam_pids() {
    local pid comm
    for pid in $(ip netns pids "$(fleet_ns "$1")" 2>/dev/null); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        [ "$comm" = beam.smp ] && printf '%s\n' "$pid"
    done
    return 0
}

# The failover URL of a client: the three nodes, starting at FIRST (mq1..mq3), so
# clients spread over the cluster deterministically. No credentials in it: the
# login is in each tool's config and the passcode in a 0600 file.
fleet_broker_url() {
    local first=${1#mq} i n list=""
    for ((i = 0; i < 3; i++)); do
        n=$(( (first - 1 + i) % 3 + 1 ))
        list="${list:+$list,}stomp://mq$n:$FLEET_STOMP_PORT"
    done
    printf 'failover:(%s)?initialReconnectDelay=0.05&maxReconnectDelay=2&useExponentialBackOff=true&maxReconnectAttempts=0&startupMaxReconnectAttempts=0&randomize=false\n' "$list"
}

# fleet_start_daemon HOST dk-fetch|dk-agent: start the daemon on server HOST with its
# config from the run dir (metrics and /healthz on HOST:9464 for dk-fetch, :9465 for dk-agent).
fleet_start_daemon() {
    local s="$1" d="$2" port="$FLEET_METRICS_PORT" cfg
    case "$d" in
        dk-fetch) cfg=fetch.toml ;;
        dk-agent) cfg=agent.toml; port=$((FLEET_METRICS_PORT + 1)) ;;
        *) dk_die "fleet_start_daemon: unknown daemon $d" ;;
    esac
    fleet_spawn "$s" "$d" "$FLEET_RUN/hosts/$s/log/$d.log" "$FLEET_BIN/$d" --config "$FLEET_RUN/hosts/$s/etc/$cfg" \
        --heartbeat "$FLEET_HEARTBEAT_MS" --metrics-listen "$(fleet_addr "$s"):$port" -v --log-format json
}
fleet_daemon_port() { if [ "$1" = dk-agent ]; then echo $((FLEET_METRICS_PORT + 1)); else echo "$FLEET_METRICS_PORT"; fi; }

# fleet_mq_await mqN: until rabbit@mqN has started (bounded: 120 s; its start.log tail on
# failure). await_startup fails at once while the node is not registered with epmd: retried.
fleet_mq_await() {
    local m="$1" deadline=$((SECONDS + 120))
    until timeout 60 ip netns exec "$(fleet_ns "$m")" rabbitmqctl -q await_startup </dev/null >>"$FLEET_RUN/hosts/$m/log/start.log" 2>&1; do
        [ $SECONDS -lt $deadline ] || { dk_tail_file "$FLEET_RUN/hosts/$m/log/start.log" 30; return 1; }
        sleep 0.5
    done
}

fleet_need_up() {
    [ -f "$FLEET_MARKER" ] && [ -f "$FLEET_RUN/fleet.env" ] || dk_die "no fleet is up under $FLEET_RUN (run scripts/fleet/up first)"
    # shellcheck source=/dev/null
    . "$FLEET_RUN/fleet.env"
}
