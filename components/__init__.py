"""KFP components: thin doors into the hospital_mlops library, one per pipeline stage."""
