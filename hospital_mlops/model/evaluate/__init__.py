"""Model evaluation: metrics with patient-cluster bootstrap CIs, calibration, subgroups,
thresholds per use case and decision curves. Computes only; ``governance`` renders."""
