"""Capacity controllers: how the experiment changes the number of running tasks."""
