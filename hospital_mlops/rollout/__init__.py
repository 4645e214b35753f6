"""The stepped rollout: shadow → silent → canary → full, gated, with rollback criteria."""
