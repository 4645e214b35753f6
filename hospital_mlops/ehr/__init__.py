"""The EHR side: FHIR R4 resources to model inputs (the mapping, the readers, the FHIR client and
example Bundles) and CDS Hooks (requests, cards, client auth, feedback, the calibration table and
the explanation page). The HTTP door is serving/cds_service.py.
"""
