"""The 3D backends of the pipeline (`maskfield.backends.registry`): one package per backend."""
