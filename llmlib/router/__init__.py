"""The query router (gate, features, MLP) and the routing core's configuration."""
