"""ntpd-py core package."""
