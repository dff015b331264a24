"""Training and evaluation of patch matchers on patch-pair datasets in the published format.

Modules (import the one you need; this package imports nothing heavy):

- ``datasets``: memory-mapped loaders for vis-nir, os, sen1-2 and ``dataset build`` folders
- ``build``: ``geomatch dataset build``, cutting patch pairs and writing the patch set
- ``source_pairs``: the image pairs a build reads (aligned or with an affine) and ``--pairs`` CSV lists
- ``presets``: the ``vis-nir`` and ``optical-sar`` build presets
- ``splits``: the one train / val / test rule (whole places or images, fractions of valid pixels)
- ``augment``: the seed's ``gen4`` augmentation (+ optional SAR speckle)
- ``losses``: per-head losses (Keras-clipped BCE, two-class CE, pixel + optional VGG19 perceptual reconstruction)
- ``loop``: ``train()``, the seed's optimisers and sampling, clean or seed model selection, resume
- ``evaluate``: ``evaluate()``, FPR95 per subset exactly as the seed, accuracy, AUC, ROC plot
- ``metrics``, ``plots``: the metric functions and the PNG figures
- ``scene_files``, ``scenes``: finding the optical/SAR scenes of each source folder; reading one, aligned
"""
