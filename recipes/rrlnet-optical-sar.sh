#!/usr/bin/env bash
# The shipped `optical-sar` weights (plugins/weights/rrlnet-optical-sar.pt): RRL-Net at width 0.25,
# VIS-NIR pre-training (stage 1 of recipes/rrlnet-vis-nir.sh, which was the shipped vis-nir file at the
# time), fine-tuned on co-registered S1/S2 chips with a scene-level split. About 11 min on 2 CPU cores.
set -euo pipefail
DATA=${GEOMATCH_DATA:-../shared/data}
# The shipped weights predate the volkov-s1s2/3mos/changedet sources: --include keeps the build they used.
geomatch dataset build --preset optical-sar --data-dir "$DATA" --include terramind --include bigearthnet --include sen1floods11 --include ssl4eo-s12 --out data/optical-sar-patches --seed 0 --hard-offset 8 24
geomatch train --model rrlnet --dataset data/optical-sar-patches --width 0.25 --init-weights runs/stage1/rrlnet-vis-nir-stage1.pt --epochs 20 --batch-size 64 --lr 2e-4 --out runs/rrlnet-optsar-w025 --seed 100
geomatch evaluate --weights runs/rrlnet-optsar-w025/best.pt --dataset data/optical-sar-patches
geomatch models package runs/rrlnet-optsar-w025/best.pt --tag optical-sar --card plugins/weights/rrlnet-optical-sar.md --description "RRL-Net w0.25 for optical (S2 grey) to SAR (S1 VV dB) patches: VIS-NIR pre-training, fine-tuned on 6 S1/S2 scenes (CPU)" --pair-type optical-sar --test-scene terramind/433D_629L_3_1 --test-scene terramind/637U_59R_1_3 --test-scene bigearthnet/S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24
