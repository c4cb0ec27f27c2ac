"""Training: the continual loop of one trial, its update methods and its checkpoints."""
