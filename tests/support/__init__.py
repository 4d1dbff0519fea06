"""Helpers shared by the tests: generated images, thread-count control, the layout snapshot."""
