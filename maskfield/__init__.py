"""MaskField: mask neural fields for 3D open-vocabulary segmentation."""

__version__ = "0.1.0"
