"""CLIP: loading, seeded random weights, the blocks, SC-CLIP's calibrated last block and its
parts (anomaly tokens, affinity), and the text tower. Imports ``maps``, ``files`` and below."""
