"""Compute-optimal shapes: the paper's scaling law, its fit and recommendation, the star sweep."""
