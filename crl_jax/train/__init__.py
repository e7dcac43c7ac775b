"""Training: state, optimiser, objective, step, sharding, checkpoints and the loop."""
