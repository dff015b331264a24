"""Matcher contract, Keras-faithful building blocks, checkpoints and export."""
