"""ntpd-py supervisor package."""
