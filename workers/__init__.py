"""ntpd-py workers package."""
