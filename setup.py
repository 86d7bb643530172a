"""The one thing pyproject.toml does not say: the router's hot path in C (llmlib/_routerc.c).
Optional: where it cannot be built (no compiler or Python headers), the install goes on and
the router runs its numpy path."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("llmlib._routerc", ["llmlib/_routerc.c"], libraries=["m"], optional=True)
    ]
)
