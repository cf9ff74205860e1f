"""Evaluation: judge networks and the metrics for realism, diversity, controllability and novelty."""
