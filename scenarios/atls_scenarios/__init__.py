"""Scenarios, the runner and the atls-testbed command."""
