"""Teachers: where the 2D supervision comes from.

- `sam`: SAM automatic masks at s/m/l levels (`mask_nms`: the official per-level mask NMS);
- `clip`: MaskCLIP dense features of an open_clip ViT, mask-average pooled;
- `text`: the one text-encoder API (`load_text_encoder(model_id)`), shared with inference;
- `simulated`: SAM-/CLIP-like masks and embeddings from ground-truth instances.

The stage functions that write masks.h5 / embeddings.h5 live in `maskfield.stages.teachers`.
"""
