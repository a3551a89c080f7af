"""Tasks built on the training core; no task imports another."""
