"""Evaluation: metrics on runs, reports, plots, published figures, ensembles."""
