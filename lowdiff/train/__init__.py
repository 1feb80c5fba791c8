"""Training loop, EMA and checkpoints."""
