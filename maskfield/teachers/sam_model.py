"""The segment_anything parts of the SAM teacher: a SAM of a given architecture, and the
automatic mask generator that keeps the s/m/l levels apart (`maskfield.teachers.sam` explains
why and holds the settings)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.amg import MaskData, batch_iterator, rle_to_mask, uncrop_boxes_xyxy, uncrop_points
from torchvision.ops.boxes import batched_nms

from maskfield.teachers.mask_nms import MaskNmsSettings, mask_nms
from maskfield.teachers.sam import SamArch, SamSettings


def build_sam_model(a: SamArch) -> Sam:
    """A randomly initialised SAM of architecture `a` (same assembly as build_sam._build_sam)."""
    emb = a.image_size // a.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=a.encoder_depth, embed_dim=a.encoder_embed_dim, img_size=a.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=a.encoder_num_heads,
            patch_size=a.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=a.encoder_global_attn_indexes, window_size=a.window_size,
            out_chans=a.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(a.image_size, a.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth, embedding_dim=a.prompt_embed_dim,
                mlp_dim=a.decoder_mlp_dim, num_heads=a.decoder_num_heads,
            ),
            transformer_dim=a.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


class LeveledMaskGenerator(SamAutomaticMaskGenerator):
    """`SamAutomaticMaskGenerator` whose mask records carry `level` (the multimask index 0/1/2)."""

    def _process_batch(self, points, im_size, crop_box, orig_size) -> MaskData:
        """Run the decoder once, then the stock per-mask filtering once per multimask output."""
        predictor = self.predictor
        in_points = torch.as_tensor(predictor.transform.apply_coords(points, im_size), device=predictor.device)
        labels = torch.ones(len(in_points), dtype=torch.int, device=predictor.device)
        masks, iou_preds, low = predictor.predict_torch(
            in_points[:, None, :], labels[:, None], multimask_output=True, return_logits=True
        )
        out = MaskData()
        for level in range(masks.shape[1]):
            sl = slice(level, level + 1)
            # The stock method calls predict_torch itself; hand it this level's precomputed output
            # (an instance attribute shadows the method for the duration of the call only).
            predictor.predict_torch = lambda *a, _s=sl, **k: (masks[:, _s], iou_preds[:, _s], low[:, _s])
            try:
                data = super()._process_batch(points, im_size, crop_box, orig_size)
            finally:
                del predictor.predict_torch
            n, dev = len(data["rles"]), data["iou_preds"].device
            data["level"] = torch.full((n,), level, dtype=torch.int64, device=dev)
            out.cat(data)
        return out

    def _process_crop(self, image, crop_box, crop_layer_idx, orig_size) -> MaskData:
        """The stock crop loop, with box NMS per level instead of across levels (as the fork)."""
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        self.predictor.set_image(cropped)
        points_for_image = self.point_grids[crop_layer_idx] * np.array(cropped.shape[:2])[None, ::-1]
        data = MaskData()
        for (points,) in batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, cropped.shape[:2], crop_box, orig_size))
        self.predictor.reset_image()
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], data["level"], iou_threshold=self.box_nms_thresh)
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))])
        return data

    def generate_levels(self, image: np.ndarray, nms: MaskNmsSettings) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Masks per level after small-region cleanup and mask NMS.

        Args:
            image: [h, w, 3] uint8.
        Returns:
            level -> (masks [k, h, w] bool, scores [k] float32 = predicted_iou x stability), best first.
        """
        data = self._generate_masks(image)
        h, w = image.shape[:2]
        out = {}
        for level in range(3):
            sub = MaskData(**dict(data.items()))
            sub.filter(torch.as_tensor(np.asarray(data["level"]) == level))
            if self.min_mask_region_area > 0:
                sub = self.postprocess_small_regions(
                    sub, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
                )
            if len(sub["rles"]) == 0:
                out[level] = (np.zeros((0, h, w), bool), np.zeros(0, np.float32))
                continue
            masks = np.stack([rle_to_mask(r) for r in sub["rles"]]).astype(bool)
            scores = (np.asarray(sub["iou_preds"]) * np.asarray(sub["stability_score"])).astype(np.float32)
            keep = mask_nms(masks, scores, nms)
            out[level] = (masks[keep], scores[keep])
        return out


def make_generator(model: Sam, s: SamSettings) -> LeveledMaskGenerator:
    """The generator with the settings of `s` (crop layers off, as the official code)."""
    return LeveledMaskGenerator(
        model,
        points_per_side=s.points_per_side,
        points_per_batch=s.points_per_batch,
        pred_iou_thresh=s.pred_iou_thresh,
        stability_score_thresh=s.stability_score_thresh,
        box_nms_thresh=s.box_nms_thresh,
        crop_n_layers=0,
        min_mask_region_area=s.min_mask_region_area,
        output_mode="binary_mask",
    )
