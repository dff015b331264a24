"""Training and evaluation of patch matchers on patch-pair datasets in the published format.

Modules (import the one you need; this package imports nothing heavy):

- ``datasets``: memory-mapped loaders for vis-nir, os, sen1-2 and ``dataset build`` folders
- ``build``: ``geomatch dataset build``, cutting patch pairs from co-registered image pairs
- ``augment``: the seed's ``gen4`` augmentation (+ optional SAR speckle)
- ``losses``: per-head losses (Keras-clipped BCE, two-class CE, pixel + optional VGG19 perceptual reconstruction)
- ``loop``: ``train()``, the seed's optimisers and sampling, clean or seed model selection, resume
- ``evaluate``: ``evaluate()``, FPR95 per subset exactly as the seed, accuracy, AUC, ROC plot
- ``metrics``, ``plots``: the metric functions and the PNG figures
- ``sources``: co-registered Sentinel-1/2 scene pairs as training material
"""
