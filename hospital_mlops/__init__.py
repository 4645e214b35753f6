"""hospital-mlops: hospital risk models from raw EHR extracts to trusted predictions.

The library is pure domain code (no kfp or kserve imports); ``components/`` and ``serving/`` are
thin adapters over it. Importing it changes nothing in the process (see ``quiet.py`` for how
telemetry stays off).
"""

__version__ = "0.1.0"
