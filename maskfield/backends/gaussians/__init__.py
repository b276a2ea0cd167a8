"""The 3D Gaussian Splatting backend: Gaussians fitted to the training views on CPU or GPU, frozen
into each cached pixel's top-K Gaussians (`freeze`), one learned mask feature per Gaussian
(`feature_field`).

Modules: projection and compositing (the pure-torch rasterizer), rasterize (`rasterize`: gsplat's
CUDA kernels when they load, else the torch path), sh (view-dependent colour), model (the
parameters, rendering a Scene's views), init (first Gaussians from depth maps, COLMAP points or
the NeRF surface), losses, train_rgb (fit and evaluate), checkpoint (save/load), rgb (the
train-rgb stage's part), freeze (the geometry cache), feature_field (the mask features), export
(3DGS PLY files).
"""

from maskfield.backends.registry import Backend

BACKEND = Backend(
    name="gaussians",
    parts={
        "rgb_settings": "maskfield.backends.gaussians.train_rgb:GaussianRGBSettings",
        "train_rgb": "maskfield.backends.gaussians.rgb:train",
        "rgb_needs": "maskfield.backends.gaussians.rgb:rgb_needs",
        "load_rgb": "maskfield.backends.gaussians.checkpoint:load_gaussians",
        "geometry_settings": "maskfield.backends.gaussians.freeze:GaussianGeometrySettings",
        "freeze": "maskfield.backends.gaussians.freeze:build_geometry",
        "mask_settings": "maskfield.backends.gaussians.feature_field:GaussianMaskSettings",
        "feature_field": "maskfield.backends.gaussians.feature_field:GaussianFeatureField",
        "export": "maskfield.backends.gaussians.export:export",
    },
)
