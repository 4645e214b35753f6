"""KServe adapters: thin ``kserve.Model`` classes over the library (see
hospital_mlops.model.scoring)."""
