"""Deploying: kustomize overlays for a registered version at a rollout stage, the container
engine for local runs, and a rendered manifest's containers as the `podman run` that reproduces
them.
"""
