"""Scenarios that interrupt the weighted mix at a moment of the test (the flash sale)."""
