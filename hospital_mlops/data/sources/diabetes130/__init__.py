"""The bundled UCI Diabetes 130-US hospitals extract's own definitions (beyond its catalog entry in
config/catalog.yaml, which the generic CSV reader reads): its fault scenarios (``faults``)."""
