"""Evaluation: FID / IS statistics and metrics."""
