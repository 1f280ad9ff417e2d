"""One training loop shared by bootstrap, stage 1 and stage 2; checkpoints and resume."""
