"""Folders of images: inputs, a run's bookkeeping and files, the engines (local threads, Ray),
``segment`` and ``evaluate`` as plain functions. Imports ``predict`` and below."""
