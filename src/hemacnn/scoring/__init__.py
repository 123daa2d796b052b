"""Scoring from arrays: metrics and class maps (below inference: predict uses them)."""
