"""The request path: requests, cores, the pool and its traffic policies, the request log."""
