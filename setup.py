"""Build the one native module (workers/_nts_fast.c: the NTS server's per-batch work,
linked to OpenSSL's libcrypto); everything else is in pyproject.toml.

It needs a C compiler, the Python headers and OpenSSL 3's (Debian: gcc, python3-dev,
libssl-dev). Where they are missing the install still succeeds without it (optional),
and the server worker says at start that NTS takes the slower Python path; the test
suite (tests/workers/test_nts_fast.py) fails instead, so CI always builds it."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ntpd_py.workers._nts_fast",
            sources=["workers/_nts_fast.c"],
            libraries=["crypto"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)
