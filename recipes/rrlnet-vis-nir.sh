#!/usr/bin/env bash
# The shipped `vis-nir` weights (plugins/weights/rrlnet-vis-nir.pt): RRL-Net at width 0.25 on 2 CPU cores.
# The seed's protocol: train on Country, select on other Country images, test on Field and Forest.
# Two stages, because sessions end: stage 1 ran 3 epochs of 500 iterations from scratch (65 min); stage 2
# continued from stage 1's shipped (pruned) file for 5 more epochs (the auxiliary heads restart fresh).
set -euo pipefail
DATA=${GEOMATCH_DATA:-../shared/data}
# Since the split rule became one for all builders, a rebuild picks a different Country validation set
# (11 images, 20.4 % of pixels) than the one these weights were selected on (10 images, 18.5 %).
geomatch dataset build --preset vis-nir --source "$DATA/vis-nir" --out data/vis-nir-patches --seed 0 --hard-offset 8 24
geomatch train --model rrlnet --dataset vis-nir --data-dir data/vis-nir-patches --width 0.25 --epochs 3 --max-iters-per-epoch 500 --batch-size 64 --lr 2e-4 --out runs/rrlnet-visnir-w025 --seed 100
geomatch models package runs/rrlnet-visnir-w025/best.pt --tag vis-nir-stage1 --out runs/stage1 --card plugins/weights/rrlnet-vis-nir.md --description "stage 1" --pair-type vis-nir
geomatch train --model rrlnet --dataset vis-nir --data-dir data/vis-nir-patches --width 0.25 --init-weights runs/stage1/rrlnet-vis-nir-stage1.pt --epochs 5 --max-iters-per-epoch 500 --batch-size 64 --lr 2e-4 --out runs/rrlnet-visnir-w025-ft --seed 101
geomatch evaluate --weights runs/rrlnet-visnir-w025-ft/best.pt --dataset vis-nir --data-dir data/vis-nir-patches
geomatch models package runs/rrlnet-visnir-w025-ft/best.pt --tag vis-nir --card plugins/weights/rrlnet-vis-nir.md --description "RRL-Net w0.25 trained on VIS-NIR Country patches (8 short epochs, CPU)" --pair-type vis-nir --test-scene vis-nir/field --test-scene vis-nir/forest
