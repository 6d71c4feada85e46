#!/usr/bin/env bash
# Local Apache Kafka for development, tests and the demo: one KRaft node on 127.0.0.1.
#
#   deploy/kafka/kafka.sh up      fetch the pinned jars (once), format storage (once), start, wait until ready
#   deploy/kafka/kafka.sh down    stop the broker this state folder started
#   deploy/kafka/kafka.sh status  say whether it runs
#
# Settings (environment):
#   METAREC_KAFKA_PORT   broker port (default 9092; the controller listens on PORT+1)
#   METAREC_KAFKA_STATE  state folder: data, logs, pid (default <repo>/.state/kafka)
#   METAREC_CACHE        jar cache outside git (default ~/.cache/metarec)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
port=${METAREC_KAFKA_PORT:-9092}
cport=$((port + 1))
state=${METAREC_KAFKA_STATE:-$repo/.state/kafka}
cache=${METAREC_CACHE:-$HOME/.cache/metarec}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
pomsum=$(sha256sum "$here/pom.xml" | cut -c1-12)
libs=$cache/kafka-$version-$pomsum/libs
pidfile=$state/kafka.pid

die() { echo "kafka: $*" >&2; exit 1; }

need_tools() {
  command -v java >/dev/null 2>&1 || die "Java 17 or newer is required to run Kafka, and 'java' is not on PATH (Debian: apt-get install openjdk-17-jre-headless)."
  local jv
  jv=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${jv%%.*}" -ge 17 ] 2>/dev/null || die "Java 17 or newer is required to run Kafka; found Java ${jv:-unknown}."
  if [ ! -f "$libs/.complete" ]; then
    command -v mvn >/dev/null 2>&1 || die "Maven is required to fetch the Kafka $version jars, and 'mvn' is not on PATH (Debian: apt-get install maven)."
  fi
}

fetch_jars() {
  [ -f "$libs/.complete" ] && return 0
  echo "kafka: fetching Apache Kafka $version jars from Maven Central into $libs"
  mkdir -p "$libs"
  if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs" >"$cache/kafka-mvn.log" 2>&1; then
    die "Maven could not fetch the Kafka jars; see $cache/kafka-mvn.log"
  fi
  touch "$libs/.complete"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

write_config() {
  mkdir -p "$state/data" "$state/logs"
  cat >"$state/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
}

jopts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$state/logs" -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*")
java_run() { java "${jopts[@]}" "$@"; }

up() {
  if running; then echo "kafka: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return 0; fi
  if port_open; then die "port $port is taken by another process; set METAREC_KAFKA_PORT or METAREC_KAFKA_BOOTSTRAP to use that broker."; fi
  need_tools
  fetch_jars
  write_config
  if [ ! -f "$state/data/meta.properties" ]; then
    local cid
    cid=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    java_run kafka.tools.StorageTool format -t "$cid" -c "$state/server.properties" >"$state/logs/format.log" 2>&1 \
      || die "formatting storage failed; see $state/logs/format.log"
  fi
  nohup java "${jopts[@]}" kafka.Kafka "$state/server.properties" >"$state/logs/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  local waited=0
  until port_open && grep -q "Kafka Server started" "$state/logs/server.log" 2>/dev/null; do
    running || die "the broker exited while starting; see $state/logs/server.log and $state/logs/stdout.log"
    sleep 0.5; waited=$((waited + 1))
    [ "$waited" -lt 240 ] || die "the broker did not become ready within 120 s; see $state/logs/server.log"
  done
  echo "kafka: Apache Kafka $version ready on 127.0.0.1:$port (pid $(cat "$pidfile"), state $state)"
}

down() {
  if ! running; then rm -f "$pidfile"; echo "kafka: not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "kafka: stopped (pid $pid)"
}

status() {
  if running; then echo "kafka: running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "kafka: not running"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: deploy/kafka/kafka.sh up|down|status" >&2; exit 2 ;;
esac
