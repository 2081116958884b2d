"""Metric sources: where utilization samples come from during a run."""
