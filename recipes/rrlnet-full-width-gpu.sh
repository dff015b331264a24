#!/usr/bin/env bash
# The published recipe for a user with a GPU and the published patch files (rrlnet-spec §2): RRL-Net at
# width 1.0, 40 epochs, batch 64, NAdam 2e-4, all MLPP heads, mixed precision on CUDA. Give local VGG19
# weights (torchvision layout) for the perceptual term of the reconstruction loss; without them it is off.
# PATCHES holds country.npy, field.npy, ... (VIS-NIR) or sne_train_image.npy, ... (SEN1-2).
set -euo pipefail
PATCHES=${PATCHES:-data/vis-nir}
VGG19=${VGG19:-vgg19.pth}
geomatch train --model rrlnet --dataset vis-nir --data-dir "$PATCHES" --width 1.0 --epochs 40 --batch-size 64 --lr 2e-4 --device cuda --vgg19-weights "$VGG19" --out runs/rrlnet-visnir-w1
geomatch evaluate --weights runs/rrlnet-visnir-w1/best.pt --dataset vis-nir --data-dir "$PATCHES" --device cuda --roc runs/rrlnet-visnir-w1/roc.png
