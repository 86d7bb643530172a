"""Commands around the harness: the fleet simulator, the router's tools, the tiny model."""
