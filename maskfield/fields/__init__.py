"""Parts that every 3D backend may build on: encodings (hash grid, TensoRF VM, dense grid,
tri-plane) and the MLP. Backend-specific fields live in `maskfield.backends.<name>`."""
