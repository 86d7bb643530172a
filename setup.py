"""The one thing pyproject.toml does not say: the router's hot path in C
(llmlib/router/_routerc.c). Optional: where it cannot be built (no compiler or Python
headers), the install goes on and the router runs its numpy path."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "llmlib.router._routerc", ["llmlib/router/_routerc.c"], libraries=["m"], optional=True
        )
    ]
)
