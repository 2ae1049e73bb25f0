"""Plots that take result containers (nothing refits to draw).

Matplotlib is imported lazily with the non-interactive Agg backend.
"""
