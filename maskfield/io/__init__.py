"""Atomic writes, HDF5 schemas and checkpoints: the only layer that touches artifact files."""
