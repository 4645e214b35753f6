"""Installs hospital-mlops' egress guard at interpreter start when HMLOPS_EGRESS_GUARD_LOG is set
(see hospital_mlops/security/egress_guard.py); on PYTHONPATH only for a guarded run."""

import os

if os.environ.get("HMLOPS_EGRESS_GUARD_LOG"):
    from hospital_mlops.security.egress_guard import install_from_env

    install_from_env()
