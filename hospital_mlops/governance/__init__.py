"""Governance: the model registry, sign-offs and the evidence packet a committee reads."""
