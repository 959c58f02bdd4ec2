"""QEMU real-kernel test harness: `python -m tests.vm run -- CMD`, and the `vm` pytest marker."""
