"""Monitoring after deployment: outcomes joined late, per-window metrics against the validated
baseline, and alerts with owners."""
