"""Quality gates: checks generated from the data catalog, run by Great Expectations."""
