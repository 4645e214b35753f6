"""Kubeflow pipelines wired from the components in ``components/``."""
