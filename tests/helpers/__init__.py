"""Runners and data builders shared by the tests."""
