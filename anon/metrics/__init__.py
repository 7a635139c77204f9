"""Evaluation metrics: identity re-identification, detection and attribute measures on generated faces."""
