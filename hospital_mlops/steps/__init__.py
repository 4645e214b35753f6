"""The pipeline steps as functions over paths: what each KFP component calls (data.py: ingest →
normalize → validate → features → publish; model.py: train → evaluate → gate → register;
monitoring.py: monitor → triggers → retrain → compare). The one room that may use every other
room; no room imports it."""
