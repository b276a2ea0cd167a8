"""The NeRF backend: a voxel-grid radiance field trained on CPU or GPU, frozen into per-pixel
samples (`geometry_cache`) for a mask-feature network over those samples (`feature_field`).

Modules: nerf (the radiance field), spaces (scene normalisation per camera regime), samplers
(stratified samples, occupancy grid), rendering (compositing), train_rgb (fit and evaluate),
checkpoint (save/load), rgb (the train-rgb stage's part), geometry_cache (freeze),
feature_field (the mask features), export (the labelled surface points as a PLY).
"""

from maskfield.backends.registry import Backend

BACKEND = Backend(
    name="nerf",
    parts={
        "rgb_settings": "maskfield.backends.nerf.train_rgb:TrainRGBSettings",
        "train_rgb": "maskfield.backends.nerf.rgb:train",
        "load_rgb": "maskfield.backends.nerf.checkpoint:load_field",
        "geometry_settings": "maskfield.backends.nerf.geometry_cache:GeometrySettings",
        "freeze": "maskfield.backends.nerf.geometry_cache:build_geometry",
        "mask_settings": "maskfield.backends.nerf.feature_field:NerfMaskSettings",
        "feature_field": "maskfield.backends.nerf.feature_field:NerfFeatureField",
        "export": "maskfield.backends.nerf.export:export",
    },
)
