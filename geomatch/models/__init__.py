"""Matchers: the contract, Keras-faithful building blocks, checkpoints and weights, export, and scoring."""
