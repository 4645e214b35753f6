"""Drift of the served population against the validated period: the reference, the tests, the
monitor over inference-logger events, thresholds from the baseline's own variation, tiered
alerts, hard data faults, and where drift results are stored.
"""
