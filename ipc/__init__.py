"""ntpd-py ipc package."""
