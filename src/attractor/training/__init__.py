"""Training: the loop (engine.py), its forward passes, data streams and the run orchestration."""
