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
#   METAREC_KAFKA_SECURE 1: a secured broker instead (below); default 0, the plain broker above
#   METAREC_KAFKA_USERS  secure mode: SCRAM users made besides admin (default "metarec")
#
# Secure mode (METAREC_KAFKA_SECURE=1; `METAREC_KAFKA_SECURE=1 make kafka-up`): clients connect only
# over SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:PORT (default 9094, so that it can run beside the plain
# broker; state default <repo>/.state/kafka-secure). There is no PLAINTEXT client listener. On the
# first start the script makes, in the state folder:
#   tls/ca.pem               the CA that clients trust (METAREC_KAFKA_SSL_CAFILE)
#   tls/broker.pem           the broker's key and certificate (SAN IP:127.0.0.1 and DNS:localhost)
#   secrets/<user>.password  a random password per SCRAM user (mode 600, never printed): admin, a
#                            super user, and each of METAREC_KAFKA_USERS (e.g. metarec, the worker's
#                            principal: it may do nothing until ACLs grant it, `metarec acls`)
# Authorization: KRaft's StandardAuthorizer, allow.everyone.if.no.acl.found=false. The controller
# listener (PORT+1, 127.0.0.1) is TLS with a required client certificate signed by that CA (the
# broker's own), so nothing unauthenticated reaches it; the broker talks to itself over SASL_SSL as
# admin (server.properties holds that password and is mode 600). Users are made when storage is
# formatted; add more later with an admin client, or use a fresh state folder.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
secure=${METAREC_KAFKA_SECURE:-0}
if [ "$secure" = 1 ]; then
  port=${METAREC_KAFKA_PORT:-9094}
  state=${METAREC_KAFKA_STATE:-$repo/.state/kafka-secure}
else
  port=${METAREC_KAFKA_PORT:-9092}
  state=${METAREC_KAFKA_STATE:-$repo/.state/kafka}
fi
cport=$((port + 1))
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
port_open_at() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open() { port_open_at "$port"; }

# What both modes share: one node's storage, internal topics and retention.
storage_properties() {
  cat <<EOF
log.dirs=$state/data
num.partitions=4
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
auto.create.topics.enable=true
EOF
  storage_properties >>"$state/server.properties"
}

# Secure mode: the CA, the broker's certificate and the SCRAM passwords, made once per state folder
# (the certificates again when they expire within a day).
make_tls() {
  local tls=$state/tls
  [ -f "$tls/broker.pem" ] && openssl x509 -checkend 86400 -noout -in "$tls/broker.crt" >/dev/null 2>&1 && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl is required for METAREC_KAFKA_SECURE=1 (Debian: apt-get install openssl)"
  mkdir -p "$tls" && chmod 700 "$tls"
  (
    umask 077 && cd "$tls"
    openssl req -x509 -newkey rsa:2048 -noenc -days 825 -subj "/CN=metarec local CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -noenc -subj "/CN=metarec-broker" -keyout broker.key -out broker.csr
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile broker.ext -out broker.crt
    cat broker.key broker.crt ca.pem >broker.pem  # Kafka's PEM keystore: the key, then the chain
    chmod 644 ca.pem broker.crt
  ) >"$state/logs/tls.log" 2>&1 || die "making the TLS certificates failed; see $state/logs/tls.log"
  chmod 755 "$tls"  # ca.pem is public; the keys stay 600
}

scram_users() { echo admin ${METAREC_KAFKA_USERS-metarec}; }

make_secrets() {
  mkdir -p "$state/secrets" && chmod 700 "$state/secrets"
  local u
  for u in $(scram_users); do
    [[ "$u" =~ ^[A-Za-z0-9._-]+$ ]] || die "METAREC_KAFKA_USERS: '$u' is not a plain user name"
    [ -s "$state/secrets/$u.password" ] || (umask 077 && openssl rand -hex 24 >"$state/secrets/$u.password")
  done
}

write_secure_config() {
  mkdir -p "$state/data" "$state/logs"
  local tls=$state/tls admin_pw
  admin_pw=$(cat "$state/secrets/admin.password")
  (umask 077 && cat >"$state/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
ssl.endpoint.identification.algorithm=https
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:CN=metarec-broker
auto.create.topics.enable=false
EOF
  storage_properties >>"$state/server.properties")
}

# The SCRAM users exist from the first moment (`format --add-scram`). The arguments go through a
# java @argfile (mode 600, removed after) so that no password shows on a command line.
format_secure() {
  local cid u argfile=$state/format.args
  cid=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
  (
    umask 077
    printf '"%s"\n' kafka.tools.StorageTool format -t "$cid" -c "$state/server.properties" >"$argfile"
    for u in $(scram_users); do
      printf '"%s"\n' --add-scram "SCRAM-SHA-512=[name=$u,password=$(cat "$state/secrets/$u.password")]" >>"$argfile"
    done
  )
  java_run "@$argfile" >"$state/logs/format.log" 2>&1 || { rm -f "$argfile"; die "formatting storage failed; see $state/logs/format.log"; }
  rm -f "$argfile"
}

jopts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$state/logs" -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$libs/*")
java_run() { java "${jopts[@]}" "$@"; }

up() {
  if running; then echo "kafka: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return 0; fi
  if port_open; then die "port $port is taken by another process; set METAREC_KAFKA_PORT or METAREC_KAFKA_BOOTSTRAP to use that broker."; fi
  need_tools
  fetch_jars
  if [ "$secure" = 1 ]; then
    if port_open_at "$cport"; then die "port $cport (the controller's, PORT+1) is taken by another process"; fi
    mkdir -p "$state/logs"
    if [ -f "$state/data/meta.properties" ] && [ ! -s "$state/secrets/admin.password" ]; then
      die "$state was formatted without secure mode; choose another METAREC_KAFKA_STATE"
    fi
    make_tls
    make_secrets
    write_secure_config
    [ -f "$state/data/meta.properties" ] || format_secure
  else
    write_config
  fi
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
  if [ "$secure" = 1 ]; then
    echo "kafka: Apache Kafka $version ready on SASL_SSL 127.0.0.1:$port (SCRAM-SHA-512, pid $(cat "$pidfile"), state $state;" \
      "CA $state/tls/ca.pem; passwords of $(scram_users | tr ' ' ',') in $state/secrets/)"
  else
    echo "kafka: Apache Kafka $version ready on 127.0.0.1:$port (pid $(cat "$pidfile"), state $state)"
  fi
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
