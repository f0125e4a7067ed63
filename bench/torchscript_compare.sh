#!/usr/bin/env bash
# The built-in `cnn` against its PyTorch copy exported as TorchScript, from
# the same initial model, side by side: FedAvg (clients backprop) and forward
# gradients (clients forward only: the built-in's hand-written JVP rules
# against libtorch's forward AD through the TorchScript interpreter).
#
# usage: bench/torchscript_compare.sh OUT_DIR [--quick]
#   OUT_DIR  created; runs go to OUT_DIR/{fedavg,fg}_{builtin,ts}
#   --quick  a smoke run (1 FedAvg round, 5 forward-gradient rounds, 2,000
#            training and 500 test examples): checks the pipeline only
# env: FEDFWD_BIN (default <repo>/build/bin), FEDFWD_DATA (MNIST folder,
#      default <repo>/data/mnist), FG_ROUNDS (200), FG_LR (0.05),
#      FEDAVG_ROUNDS (2)
# Prints the test accuracies of each pair at equal rounds. docs/results.md
# ("Your own model") has the figures of a full run. Needs /usr/bin/python3
# with python3-torch (the export).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: bench/torchscript_compare.sh OUT_DIR [--quick]}"
QUICK=0
[[ "${2:-}" == "--quick" ]] && QUICK=1
BIN="${FEDFWD_BIN:-$ROOT/build/bin}"
DATA="${FEDFWD_DATA:-$ROOT/data/mnist}"
FG_ROUNDS="${FG_ROUNDS:-200}"
FG_LR="${FG_LR:-0.05}"
FEDAVG_ROUNDS="${FEDAVG_ROUNDS:-2}"
LIMITS=()
if ((QUICK)); then
  FG_ROUNDS=5 FEDAVG_ROUNDS=1
  LIMITS=(--set dataset.train_limit=2000 --set dataset.test_limit=500)
fi
mkdir -p "$OUT"
run() {  # name config [--set ...]
  local name="$1" config="$2"
  shift 2
  echo "[compare] $name" >&2
  rm -rf "${OUT:?}/$name"
  "$BIN/fedfwd-run" "$config" --out "$OUT/$name" \
    --set "dataset.data_dir=$DATA" "${LIMITS[@]}" "$@" > "$OUT/$name.log" 2>&1 ||
    { tail -20 "$OUT/$name.log" >&2; exit 1; }
}

# 1. The built-in's seed-1 initial model: one fedsgd round at lr 1e-30.
cat > "$OUT/init.yaml" <<YAML
model: cnn
dataset: {name: mnist, train_limit: 200, test_limit: 100}
clients: 1
rounds: 1
seed: 1
estimator: fedsgd
lr: 1.0e-30
eval_every: 1
YAML
LIMITS_SAVED=("${LIMITS[@]}")
LIMITS=()
run init "$OUT/init.yaml"
LIMITS=("${LIMITS_SAVED[@]}")
/usr/bin/python3 "$ROOT/configs/torchscript/export_cnn.py" \
  --out "$OUT/cnn_same.pt" --init-from "$OUT/init/final_model.bin" >&2

# 2. FedAvg.
run fedavg_builtin "$ROOT/configs/mnist_fedavg_cnn.yaml" \
  --set "rounds=$FEDAVG_ROUNDS" --set stop_at_target=false
run fedavg_ts "$ROOT/configs/torchscript/mnist_fedavg_cnn.yaml" \
  --set "model.torchscript=$OUT/cnn_same.pt" \
  --set "rounds=$FEDAVG_ROUNDS" --set stop_at_target=false

# 3. Forward gradients.
fg_config() {  # model line
  cat <<YAML
$1
dataset: {name: mnist}
clients: 10
rounds: $FG_ROUNDS
seed: 1
estimator: jvp
merge: weighted
tangent: {distribution: rademacher, count: 4}
lr: $FG_LR
clip_jvp: 1.0
batch_size: 32
sync_max_terms: 1000000
eval_every: $(( FG_ROUNDS / 2 > 0 ? FG_ROUNDS / 2 : 1 ))
timeouts: {round_s: 900, client_s: 120}
YAML
}
fg_config "model: cnn" > "$OUT/fg_builtin.yaml"
fg_config "model: {torchscript: $OUT/cnn_same.pt}" > "$OUT/fg_ts.yaml"
run fg_builtin "$OUT/fg_builtin.yaml"
run fg_ts "$OUT/fg_ts.yaml"

/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def acc(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return {r["round"]: r["test_acc"] for r in rows if r.get("test_acc") is not None}
for kind, computes in (("fedavg", "backprop"), ("fg", "forward only")):
    a, b = acc(f"{kind}_builtin"), acc(f"{kind}_ts")
    for r in sorted(set(a) & set(b)):
        print(f"{kind:6s} ({computes}) round {r:4d}: built-in {a[r]:.4f}  "
              f"exported {b[r]:.4f}  diff {b[r] - a[r]:+.4f}")
PY
