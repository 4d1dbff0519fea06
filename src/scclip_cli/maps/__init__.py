"""Tensor geometry on score and label maps: the protocol resize, sliding windows, window
patches to image size, labels and thresholds, PAMR, confusion matrices. Imports ``files`` and below."""
