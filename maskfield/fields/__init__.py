"""Radiance fields for stage 3 and the frozen geometry they hand to stage 4.

encodings (hash grid, TensoRF VM, dense grid; "voxel" density + RGB grids in nerf) -> nerf.RadianceField;
spaces (scene normalisation per regime) and samplers (stratified + occupancy grid) place samples;
rendering composites them; train_rgb fits a field; checkpoint saves/loads it; geometry_cache
freezes it into per-pixel top-K samples (`maskfield.io.geometry`).
"""
