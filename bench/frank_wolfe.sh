#!/usr/bin/env bash
# Frank-Wolfe accuracy against sparsity (docs/results.md, "Frank-Wolfe:
# accuracy against sparsity"): configs/mnist_fw_mlp.yaml (MNIST mlp, 10
# client daemons computing forward only) at several l1 radii R, polytope
# sizes K and step sizes, beside plain forward-gradient SGD
# (configs/mnist_fg_mlp.yaml) at the same rounds. Prints a Markdown table:
# final test accuracy and the fraction of non-zero weights (fedfwd-eval).
#
# usage: bench/frank_wolfe.sh OUT_DIR [--quick]
#   OUT_DIR  created; one run folder per row
#   --quick  5 rounds, 2,000 training and 500 test images: checks the
#            pipeline only
# env: FEDFWD_BIN (default <repo>/build/bin), ROUNDS (200)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: bench/frank_wolfe.sh OUT_DIR [--quick]}"
BIN="${FEDFWD_BIN:-$ROOT/build/bin}"
ROUNDS="${ROUNDS:-200}"
EXTRA=()
if [[ "${2:-}" == "--quick" ]]; then
  ROUNDS=5
  EXTRA=(--set dataset.train_limit=2000 --set dataset.test_limit=500)
fi
mkdir -p "$OUT"
# name  R  K  step (empty R: plain forward-gradient SGD)
ROWS=(
  "fg_sgd - - -"
  "r10000_k20000 10000 20000 0.05"
  "r20000_k400000 20000 400000 0.05"
  "r10000_k2000 10000 2000 0.02"
  "r10000_k5000 10000 5000 0.05"
  "r10000_k200000 10000 200000 0.05"
  "r3000_k3000 3000 3000 0.05"
  "r10000_k2000_step05 10000 2000 0.05"
  "r1000_k1000 1000 1000 0.05"
)
echo "| run | constraint | step size | final test accuracy | non-zero weights |"
echo "|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
  read -r name radius k step <<< "$row"
  echo "[frank_wolfe] $name" >&2
  rm -rf "${OUT:?}/$name"
  if [[ "$radius" == "-" ]]; then
    args=("$ROOT/configs/mnist_fg_mlp.yaml")
    constraint="none (SGD)"
    step="—"
  else
    args=("$ROOT/configs/mnist_fw_mlp.yaml"
      --set "server_optimizer.radius=$radius" --set "server_optimizer.k=$k"
      --set "lr=$step" --set lr_schedule.type=constant)
    constraint="R $radius, K $k"
  fi
  "$BIN/fedfwd-run" "${args[@]}" --out "$OUT/$name" --set "rounds=$ROUNDS" \
    --set eval_every=50 "${EXTRA[@]}" > "$OUT/$name.log" 2>&1 ||
    { tail -20 "$OUT/$name.log" >&2; exit 1; }
  acc=$(/usr/bin/python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["final_test_acc"])' \
    "$OUT/$name/summary.json")
  nonzero=$("$BIN/fedfwd-eval" "$OUT/$name/final_model.bin" |
    sed -n 's/^parameters: .*(\(.*\))$/\1/p')
  echo "| $name | $constraint | $step | $acc | $nonzero |"
done
