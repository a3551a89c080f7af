"""LLM unlearning on TOFU (in progress): the TOFU metrics."""
