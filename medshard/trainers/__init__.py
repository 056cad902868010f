"""Accelerate training for the workloads."""
