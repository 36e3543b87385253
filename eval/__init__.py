"""Evaluation: multiple-choice benchmarks, retrieval metrics, calibration, reports (see the eval issues)."""
