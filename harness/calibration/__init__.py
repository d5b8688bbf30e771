"""Calibration of the verdicts: a synthetic trainer with a known optimum drift (synthetic) and whole simulated sweeps of
the real planner and analysis fed by it (simulate); scripts/error-rates prints the error-rate table from them."""
