#!/usr/bin/env bash
# The shipped `vis-nir` weights (plugins/weights/rrlnet-vis-nir.pt): RRL-Net at width 0.25 on 2 CPU cores.
# The seed's protocol: train on Country, select on other Country images, test on Field and Forest.
# DATA defaults to ../shared/data; the shipped file stopped after epoch 3 (session time): run more epochs
# with `--resume --epochs N` to continue.
set -euo pipefail
DATA=${GEOMATCH_DATA:-../shared/data}
geomatch dataset build --preset vis-nir --source "$DATA/vis-nir" --out data/vis-nir-patches --seed 0
geomatch train --model rrlnet --dataset vis-nir --data-dir data/vis-nir-patches --width 0.25 --epochs 8 --max-iters-per-epoch 500 --batch-size 64 --lr 2e-4 --out runs/rrlnet-visnir-w025 --seed 100
geomatch evaluate --weights runs/rrlnet-visnir-w025/best.pt --dataset vis-nir --data-dir data/vis-nir-patches
geomatch models package runs/rrlnet-visnir-w025/best.pt --tag vis-nir --card plugins/weights/rrlnet-vis-nir.md --description "RRL-Net w0.25 trained on VIS-NIR Country patches (3 epochs, CPU)" --pair-type vis-nir --test-scene vis-nir/field --test-scene vis-nir/forest
