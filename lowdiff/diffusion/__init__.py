"""Preconditioning, the pyramid, the multi-resolution loss, solvers and the cascade."""
