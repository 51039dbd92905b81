#!/usr/bin/env bash
# Start, stop or check the real STOMP brokers the full test suite runs against.
#
#   scripts/brokers.sh start  [rabbitmq|activemq|all]   (default: all)
#   scripts/brokers.sh stop   [rabbitmq|activemq|all]
#   scripts/brokers.sh status [rabbitmq|activemq|all]   exit 0 = all answering, 3 = not
#   scripts/brokers.sh restart [rabbitmq|activemq|all]
#
#   RabbitMQ (Debian rabbitmq-server + rabbitmq_stomp): STOMP on 127.0.0.1:61613,
#            login guest/guest (accepted from loopback only), STOMP `host`
#            header must be a vhost: `/`.
#   ActiveMQ (Debian activemq, instance "main"): STOMP on 127.0.0.1:61614, no
#            authentication (any login is accepted; tests use admin/admin).
#
# "Running" means: a STOMP CONNECT on the port is answered with CONNECTED by the
# expected server (scripts/lib/stomp_probe.py). `start` is idempotent: a broker
# that already answers is left alone. It installs the Debian packages if they are
# missing (scripts/lib/deps.sh) and configures them (idempotently) first. If a
# broker does not come up within DK_BROKER_START_TIMEOUT seconds (default 120)
# its log tail is printed and the script exits non-zero.
#
# Needs root. Logs: $DK_LOG_DIR (default .dk-test/logs) and the brokers' own logs
# (/var/log/rabbitmq/, /var/lib/activemq/main/data/activemq.out).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PYTHON="${PYTHON:-python3}"
PROBE=("$PYTHON" "$DK_ROOT/scripts/lib/stomp_probe.py")
START_TIMEOUT="${DK_BROKER_START_TIMEOUT:-120}"
LOG="$DK_LOG_DIR/brokers.log"

RABBIT_STOMP_PORT=61613
RABBIT_CONF=/etc/rabbitmq/rabbitmq.conf
RABBIT_ADV=/etc/rabbitmq/advanced.config
RABBIT_ENV=/etc/rabbitmq/rabbitmq-env.conf
RABBIT_PLUGINS=/etc/rabbitmq/enabled_plugins

AMQ_STOMP_PORT=61614
AMQ_INSTANCE=main
AMQ_AVAIL=/etc/activemq/instances-available/$AMQ_INSTANCE
AMQ_ENABLED=/etc/activemq/instances-enabled/$AMQ_INSTANCE
AMQ_XML=$AMQ_AVAIL/activemq.xml
AMQ_OUT=/var/lib/activemq/$AMQ_INSTANCE/data/activemq.out
AMQ_CONNECTOR='<transportConnector name="stomp" uri="stomp://127.0.0.1:61614?transport.hbGracePeriodMultiplier=1.5"/>'

MARK="managed by deploykit scripts/brokers.sh"

# write_if_changed FILE CONTENT: returns 0 if the file was (re)written.
write_if_changed() {
    local file="$1" content="$2"
    if [ -f "$file" ] && [ "$(cat -- "$file")" = "$content" ]; then
        return 1
    fi
    printf '%s\n' "$content" >"$file"
    dk_log "wrote $file"
    return 0
}

# probe_server PORT LOGIN PASS: prints the server header ("" if none) of a
# broker that answers CONNECT with CONNECTED; returns non-zero otherwise.
probe_server() {
    local out
    out=$("${PROBE[@]}" 127.0.0.1 "$1" "$2" "$3" --vhost / --timeout 3 2>>"$LOG") || return 1
    printf '%s\n' "$out" | sed -n 's/^server://p' | head -n1
    return 0
}

# answering NAME PORT LOGIN PASS SERVER_PREFIX: 0 if our broker answers on PORT.
# Dies if some other STOMP server holds the port (e.g. a stray dk-broker).
answering() {
    local name="$1" port="$2" server
    server=$(probe_server "$port" "$3" "$4") || return 1
    case "$server" in
        "$5"*) return 0 ;;
        *) dk_die "$name: port 127.0.0.1:$port is answered by another STOMP server ('${server:-no server header}'); stop it first" ;;
    esac
}

# ------------------------------------------------------------------ RabbitMQ

rabbit_answering() { answering rabbitmq "$RABBIT_STOMP_PORT" guest guest RabbitMQ; }

hostname_is_loopback() {
    local addr
    addr=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 { print $1 }')
    case "$addr" in 127.*) return 0 ;; *) return 1 ;; esac
}

# Returns 0 if the configuration changed (a running node must be restarted).
rabbit_configure() {
    local changed=1
    mkdir -p /etc/rabbitmq
    # STOMP and AMQP on loopback only. Heart-beats are left to the clients
    # (RabbitMQ accepts whatever the client asks for; 0,0 disables them).
    if write_if_changed "$RABBIT_CONF" "# $MARK
listeners.tcp.1 = 127.0.0.1:5672
stomp.listeners.tcp.1 = 127.0.0.1:$RABBIT_STOMP_PORT
loopback_users.guest = true"; then changed=0; fi
    # Erlang distribution and epmd on loopback too, when the node name (the
    # host name) resolves to loopback, so the CLI tools can still reach it.
    if hostname_is_loopback; then
        if write_if_changed "$RABBIT_ADV" "%% $MARK
[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}]."; then changed=0; fi
        if ! grep -q '^export ERL_EPMD_ADDRESS=127.0.0.1' "$RABBIT_ENV" 2>/dev/null; then
            printf '\n# %s: epmd on loopback only\nexport ERL_EPMD_ADDRESS=127.0.0.1\n' "$MARK" >>"$RABBIT_ENV"
            dk_log "rabbitmq: epmd restricted to loopback in $RABBIT_ENV"
            changed=0
        fi
    fi
    if ! grep -q 'rabbitmq_stomp' "$RABBIT_PLUGINS" 2>/dev/null; then
        dk_log "rabbitmq: enabling rabbitmq_stomp (offline)"
        rabbitmq-plugins enable --offline rabbitmq_stomp </dev/null >>"$LOG" 2>&1 ||
            { dk_tail_file "$LOG" 30; dk_die "rabbitmq: rabbitmq-plugins enable failed"; }
        changed=0
    fi
    return $changed
}

rabbit_node_up() { timeout 30 rabbitmqctl -q status </dev/null >/dev/null 2>&1; }

rabbit_fail() {
    local f
    for f in /var/log/rabbitmq/rabbit@*.log /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log; do
        [ -s "$f" ] && dk_tail_file "$f" 60
    done
    dk_tail_file "$LOG" 40
    dk_die "rabbitmq: $1"
}

rabbit_start() {
    if rabbit_answering; then
        if rabbit_configure; then
            dk_log "rabbitmq: configuration changed; restarting"
            rabbit_stop
        else
            dk_log "rabbitmq: already running (STOMP 127.0.0.1:$RABBIT_STOMP_PORT answers)"
            return 0
        fi
    else
        rabbit_configure || true
    fi
    local t0; t0=$(dk_now)
    local started=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
        dk_log "rabbitmq: an Erlang node is already up but STOMP does not answer yet; waiting"
    else
        dk_log "rabbitmq: starting (rabbitmq-server -detached)"
        rabbitmq-server -detached </dev/null >>"$LOG" 2>&1 || rabbit_fail "rabbitmq-server -detached failed"
    fi
    # 1. the node: await_startup fails at once while the node is not registered
    #    with epmd yet, so retry it, each try bounded, until the deadline.
    until timeout 60 rabbitmqctl -q await_startup </dev/null >>"$LOG" 2>&1; do
        [ $SECONDS -lt $deadline ] || rabbit_fail "node not up after ${START_TIMEOUT}s"
        # give the node 10 s to appear before calling its absence a crash
        [ $SECONDS -lt $((started + 10)) ] || pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1 ||
            rabbit_fail "the Erlang node (beam.smp) exited during start-up"
        sleep 1
    done
    # 2. the STOMP listener: a real CONNECT answered with CONNECTED.
    until rabbit_answering; do
        [ $SECONDS -lt $deadline ] || rabbit_fail "STOMP on 127.0.0.1:$RABBIT_STOMP_PORT not answering after ${START_TIMEOUT}s"
        sleep 0.5
    done
    dk_log "rabbitmq: ready in $(dk_elapsed "$t0")s (STOMP 127.0.0.1:$RABBIT_STOMP_PORT)"
}

rabbit_stop() {
    command -v rabbitmqctl >/dev/null || { dk_log "rabbitmq: not installed"; return 0; }
    if rabbit_node_up; then
        dk_log "rabbitmq: stopping"
        timeout 90 rabbitmqctl stop </dev/null >>"$LOG" 2>&1 || { dk_tail_file "$LOG" 20; dk_die "rabbitmq: rabbitmqctl stop failed"; }
        local deadline=$((SECONDS + 30))
        while pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; do
            [ $SECONDS -lt $deadline ] || dk_die "rabbitmq: the Erlang node is still there 30 s after rabbitmqctl stop"
            sleep 0.2
        done
        dk_log "rabbitmq: stopped"
    else
        dk_log "rabbitmq: not running"
    fi
}

# broker_status NAME PORT LOGIN PASSCODE SERVER_PREFIX: running when a STOMP
# CONNECT on 127.0.0.1:PORT is answered by a server whose name starts with the prefix.
broker_status() {
    local name=$1 port=$2 login=$3 pass=$4 prefix=$5 server
    if server=$(probe_server "$port" "$login" "$pass") && [ "${server#"$prefix"}" != "$server" ]; then
        echo "$name: running, STOMP 127.0.0.1:$port answers CONNECTED ($server)"
        return 0
    fi
    echo "$name: not answering on 127.0.0.1:$port"
    return 3
}

rabbit_status() {
    broker_status rabbitmq "$RABBIT_STOMP_PORT" guest guest RabbitMQ
}

# ------------------------------------------------------------------ ActiveMQ

amq_answering() { answering activemq "$AMQ_STOMP_PORT" admin admin ActiveMQ; }

# Returns 0 if the configuration changed (a running broker must be restarted).
amq_configure() {
    local changed=1
    [ -f "$AMQ_XML" ] || dk_die "activemq: $AMQ_XML missing (is the Debian activemq package installed?)"
    if ! grep -qF "$AMQ_CONNECTOR" "$AMQ_XML"; then
        local tmp; tmp=$(mktemp)
        # Drop any other stomp connector, then add ours before </transportConnectors>.
        CONNECTOR="$AMQ_CONNECTOR" MARK="$MARK" awk '
            /<transportConnector[^>]*name="stomp"/ { next }
            /<\/transportConnectors>/ {
                indent = $0; sub(/<.*/, "", indent)
                print indent "    " ENVIRON["CONNECTOR"] " <!-- " ENVIRON["MARK"] " -->"
            }
            { print }' "$AMQ_XML" >"$tmp"
        grep -qF "$AMQ_CONNECTOR" "$tmp" || { rm -f "$tmp"; dk_die "activemq: could not add the STOMP connector to $AMQ_XML (no </transportConnectors>?)"; }
        cat "$tmp" >"$AMQ_XML"
        rm -f "$tmp"
        dk_log "activemq: STOMP connector 127.0.0.1:$AMQ_STOMP_PORT added to $AMQ_XML"
        changed=0
    fi
    # Per-instance options replace /usr/share/activemq/activemq-options whole:
    # keep the defaults, send the console (log4j) to a file the broker user can
    # write, and do not sleep 5 s in the init script (we probe readiness).
    local options
    options="$(cat /usr/share/activemq/activemq-options)

# $MARK
ACTIVEMQ_DATA=\"/var/lib/activemq/$AMQ_INSTANCE/data\"
ACTIVEMQ_OUT=\"$AMQ_OUT\"
STARTTIME=1"
    if write_if_changed "$AMQ_AVAIL/options" "$options"; then changed=0; fi
    # Debian's ActiveMQ 5.17 logs through log4j 1.2 and ships only a log4j2
    # file: without this, it logs nothing at all.
    if write_if_changed "$AMQ_AVAIL/log4j.properties" "# $MARK
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
log4j.logger.org.apache.activemq.spring=WARN
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN"; then changed=0; fi
    # ACTIVEMQ_OUT lives there: it must exist before the first start (the
    # package creates it only on a first start without our options).
    install -d -o activemq -g activemq "/var/lib/activemq/$AMQ_INSTANCE" "/var/lib/activemq/$AMQ_INSTANCE/data"
    if [ "$(readlink "$AMQ_ENABLED" 2>/dev/null)" != "$AMQ_AVAIL" ]; then
        ln -sfn "$AMQ_AVAIL" "$AMQ_ENABLED"
        dk_log "activemq: instance $AMQ_INSTANCE enabled"
        changed=0
    fi
    return $changed
}

# The init script's `status` always exits 0, so look at its pid file; if that
# is missing or stale while the instance's JVM runs (two concurrent starts can
# leave that), find the JVM by its activemq.base and write the pid file back so
# the init script can stop it.
AMQ_PIDFILE=/run/activemq/$AMQ_INSTANCE.pid
amq_process_up() {
    local pid
    pid=$(cat "$AMQ_PIDFILE" 2>/dev/null) || pid=""
    case "$pid" in ''|*[!0-9]*) pid="" ;; esac
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
        return 0
    fi
    pid=$(pgrep -u activemq -f -- "-Dactivemq.base=/var/lib/activemq/$AMQ_INSTANCE( |\$)" | head -n1) || true
    [ -n "$pid" ] || return 1
    mkdir -p "$(dirname "$AMQ_PIDFILE")"
    printf '%s\n' "$pid" >"$AMQ_PIDFILE"
    dk_log "activemq: pid file was missing or stale; the instance's JVM is pid $pid"
    return 0
}

amq_fail() {
    dk_tail_file "$AMQ_OUT" 80
    dk_tail_file "$LOG" 40
    dk_die "activemq: $1"
}

amq_start() {
    if amq_answering; then
        if amq_configure; then
            dk_log "activemq: configuration changed; restarting"
            amq_stop
        else
            amq_process_up || true  # repairs a missing pid file
            dk_log "activemq: already running (STOMP 127.0.0.1:$AMQ_STOMP_PORT answers)"
            return 0
        fi
    else
        amq_configure || true
    fi
    local t0; t0=$(dk_now)
    local started=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    if amq_process_up; then
        dk_log "activemq: the JVM is already up but STOMP does not answer yet; waiting"
    else
        dk_log "activemq: starting (/etc/init.d/activemq start)"
        /etc/init.d/activemq start </dev/null >>"$LOG" 2>&1 || amq_fail "/etc/init.d/activemq start failed"
    fi
    # JVM warm-up: the port may accept before the broker answers; only a
    # CONNECTED reply counts.
    until amq_answering; do
        [ $SECONDS -lt $deadline ] || amq_fail "STOMP on 127.0.0.1:$AMQ_STOMP_PORT not answering after ${START_TIMEOUT}s"
        # the pid file appears a moment after the init script returns
        [ $SECONDS -lt $((started + 15)) ] || amq_process_up ||
            amq_fail "the broker process exited during start-up (or never started)"
        sleep 0.5
    done
    dk_log "activemq: ready in $(dk_elapsed "$t0")s (STOMP 127.0.0.1:$AMQ_STOMP_PORT)"
}

amq_stop() {
    [ -x /etc/init.d/activemq ] || { dk_log "activemq: not installed"; return 0; }
    if amq_process_up; then
        dk_log "activemq: stopping"
        timeout 90 /etc/init.d/activemq stop </dev/null >>"$LOG" 2>&1 || { dk_tail_file "$LOG" 20; dk_die "activemq: stop failed"; }
        local deadline=$((SECONDS + 30))
        while amq_process_up; do
            [ $SECONDS -lt $deadline ] || dk_die "activemq: the broker process is still there 30 s after stop"
            sleep 0.2
        done
        dk_log "activemq: stopped"
    else
        dk_log "activemq: not running"
    fi
}

amq_status() {
    broker_status activemq "$AMQ_STOMP_PORT" admin admin ActiveMQ
}

# ------------------------------------------------------------------ main

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }

# One brokers.sh at a time changes broker state: two concurrent starts would
# launch two JVMs / Erlang nodes. The script re-runs itself under flock(1) with
# -o, so the lock is held by flock alone and never inherited by the brokers.
LOCK=/run/lock/deploykit-brokers.lock
take_lock() {
    [ -z "${DK_BROKERS_LOCKED:-}" ] || return 0
    command -v flock >/dev/null || return 0
    mkdir -p "$(dirname "$LOCK")"
    if ! flock -n "$LOCK" true; then
        dk_log "waiting for another scripts/brokers.sh (lock $LOCK)"
    fi
    DK_BROKERS_LOCKED=1 exec flock -o -w 600 -E 75 "$LOCK" "$0" "$@"
}

main() {
    local cmd="${1:-}" which="${2:-all}" brokers=()
    case "$which" in
        all) brokers=(rabbit amq) ;;
        rabbitmq) brokers=(rabbit) ;;
        activemq) brokers=(amq) ;;
        *) usage >&2; exit 64 ;;
    esac
    local b rc=0
    case "$cmd" in
        start)
            dk_need_root "brokers.sh start"
            take_lock "$@"
            "$DK_ROOT/scripts/lib/deps.sh" brokers
            for b in "${brokers[@]}"; do "${b}_start"; done
            ;;
        stop)
            dk_need_root "brokers.sh stop"
            take_lock "$@"
            for b in "${brokers[@]}"; do "${b}_stop"; done
            ;;
        restart)
            dk_need_root "brokers.sh restart"
            take_lock "$@"
            for b in "${brokers[@]}"; do "${b}_stop"; done
            for b in "${brokers[@]}"; do "${b}_start"; done
            ;;
        status)
            for b in "${brokers[@]}"; do "${b}_status" || rc=3; done
            ;;
        -h|--help|help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
    return $rc
}

main "$@"
