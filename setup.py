"""The one compiled part of cocod: the stat() walk's inner loops (see native_walk.py).

Everything else is configured in pyproject.toml. The extension is optional: where no C
compiler is present the install still succeeds and the listing uses its Python walk.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cocod._native",
            sources=["cocod/_native.c"],
            optional=True,
        )
    ]
)
