"""Model checkpoints built by medseg-agent itself: the tiny random Qwen-VL used by tests and smoke runs."""
