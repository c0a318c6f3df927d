"""Build script for the optional C extension; everything else is in pyproject.toml.

``ml4ml._statistics`` (the probe's fused per-layer reductions) needs a C compiler; without
one the install goes on and the probe uses its ATen kernels instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ml4ml._statistics",
            sources=["ml4ml/_statistics.c"],
            extra_compile_args=["-O3", "-Wno-psabi", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ],
)
