#!/bin/sh
# Creates spendsentry's topics on a Kafka cluster, as streams/topics.toml lays
# them out (name, partitions, configs; tests/unit/test_deploy.py keeps the two
# in step). Idempotent: existing topics are left alone. Run by the kafka-init
# service of docker-compose.yml; usable by hand against any cluster:
#   BOOTSTRAP=broker:9092 REPLICATION=3 sh deploy/kafka/create-topics.sh
set -eu
BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
REPLICATION="${REPLICATION:-1}"
TOPICS="${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}"

create() {
    "$TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --replication-factor "$REPLICATION" "$@"
}

# The broker may still be electing its controller when this starts.
tries=0
until "$TOPICS" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "create-topics: $BOOTSTRAP did not answer" >&2
        exit 1
    fi
    sleep 2
done

create --topic ai.usage --partitions 12 --config retention.ms=604800000
create --topic ai.outcomes --partitions 12
create --topic ai.alerts --partitions 3
create --topic ai.throttle --partitions 3 --config cleanup.policy=compact
create --topic ai.deadletter --partitions 3 --config retention.ms=1209600000
create --topic ai.control --partitions 1
create --topic ai.state --partitions 12 --config cleanup.policy=compact
"$TOPICS" --bootstrap-server "$BOOTSTRAP" --list
