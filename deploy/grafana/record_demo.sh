#!/usr/bin/env bash
# Records a real run and renders the dashboards from it (the pictures of docs/DEPLOY.md):
# a coordinator and two workers from build/ on loopback, Debian's prometheus scraping them every
# second, a Ristretto and a sensitivity sweep of the committed LeNet-5 on Fashion-MNIST, one
# worker killed mid-sweep and started again; then render_dashboards.py over the whole run.
#
#   bash deploy/grafana/record_demo.sh [OUT_DIR]     # default docs/images
#
# Every process it starts is stopped by its pid at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-docs/images}"
B=build
DATA=/usr/share/datasets/fashion-mnist
WORK=$(mktemp -d /tmp/bitsweep-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

GRPC=$(port); CM=$(port); W1=$(port); W2=$(port); PROM=$(port)
"$B/server/service/bitsweep-coordinator" --listen "127.0.0.1:$GRPC" --db "$WORK/results.db" \
  --lease-seconds 4 --heartbeat-seconds 1 --metrics-port "$CM" > "$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
worker() {  # NAME METRICS_PORT
  "$B/worker/bitsweep-worker" --coordinator "127.0.0.1:$GRPC" --threads 1 --name "$1" \
    --cache-dir "$WORK/cache-$1" --metrics-port "$2" > "$WORK/$1.log" 2>&1 &
  echo $!
}
W1PID=$(worker w1 "$W1"); PIDS+=("$W1PID")
W2PID=$(worker w2 "$W2"); PIDS+=("$W2PID")
cat > "$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ['$PWD/deploy/prometheus/alerts.yml']
scrape_configs:
  - job_name: coordinator
    static_configs: [{targets: ['127.0.0.1:$CM']}]
  - job_name: worker
    static_configs: [{targets: ['127.0.0.1:$W1', '127.0.0.1:$W2']}]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" --log.level=warn > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
until curl -sf "http://127.0.0.1:$PROM/-/ready" > /dev/null; do sleep 0.2; done
START=$(date +%s)
sleep 5

COMMON=(--server "127.0.0.1:$GRPC" --model models/lenet5.onnx --dataset "idx:$DATA"
        --mean 0.2860 --std 0.3530 --error-margin 1.0 --limit 10000)
"$B/client/bitsweep" submit "${COMMON[@]}" --name ristretto --strategy ristretto \
  --finetune-steps 300 > /dev/null
"$B/client/bitsweep" submit "${COMMON[@]}" --name sensitivity --strategy sensitivity \
  --weight-formats fixed:8,fixed:4,fixed:2 --activation-formats fixed:8,fixed:4 \
  --finetune-steps 100 > /dev/null
sleep 6
kill -9 "$W2PID"            # a worker dies mid-sweep: its lease expires, its trial runs again
sleep 12
W2PID=$(worker w2 "$W2"); PIDS+=("$W2PID")
for sweep in 1 2; do
  "$B/client/bitsweep" watch --server "127.0.0.1:$GRPC" --sweep "$sweep" > /dev/null 2>&1 || true
done
sleep 10
END=$(date +%s)
/usr/bin/python3 deploy/grafana/render_dashboards.py --prometheus "http://127.0.0.1:$PROM" \
  --start "$START" --end "$END" --step 1 --rate-interval 10s --out "$OUT"
echo "recorded $((END - START)) s"
