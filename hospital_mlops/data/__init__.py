"""The data: sources and extracts, the catalog, normalization and PHI tokens, content-addressed
snapshots, lineage, time-based splits, the publish index and named fault scenarios.
"""
