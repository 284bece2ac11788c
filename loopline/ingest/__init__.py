"""Extract and load: every source into the warehouse raw layer, exactly once."""
