"""Source adapters: reading catalogued extracts and generating the synthetic one."""
