"""Runners: where an artifact is profiled (this machine in a fresh process; remote boards later)."""
