"""`maskfield query`: ask a trained scene about text prompts, view by view, and see the answer.

    maskfield query --dataset D --scene S "red mug" ["blue book" ...] [--backend nerf]
                    [--views test|train|all|NAME,NAME] [--out DIR]

The mask field is loaded once; each view's query-mask probabilities and the semantic tokens are
rendered once and kept (they do not depend on the prompt), the text encoder is loaded once. Each
prompt then goes through the same query inference as `evaluate` (`maskfield.infer.query.query_mask`
with the config's `inference.query`); prompts asked together are each other's negatives under
`negatives: canonical+scene`, as a LERF-Mask scene's prompts are in evaluation, so ask related
prompts in one call ("red mug" "blue mug").

That inference always lights something (its relevances are normalised across queries), so a
prompt first has to match in the view: some query active there must be clearly closer to the
prompt than generic phrases are to anything in the scene, and closer to it than to every negative
phrase (`AskSettings`). Otherwise the view says "nothing".

Test views are rendered at the geometry cache's test resolution (the scene's, by default); train
views at the cache's lower training resolution, and their masks are upsampled to the image
(bilinearly, inside `query_mask`) before they are drawn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import prompt_negatives
from maskfield.infer.query import CANONICAL_PHRASES, QuerySettings, lerf_relevance, query_mask
from maskfield.infer.segmentation import cosine_relevance
from maskfield.io.atomic import atomic_path
from maskfield.settings import from_dict, parse_settings, to_dict
from maskfield.viz.overlay import LegendLine, overlay_picture, overlay_scale
from maskfield.viz.palette import class_colors

log = logging.getLogger("maskfield")


@dataclass
class AskSettings:
    """Settings of `maskfield query` beyond the config's `inference.query` (`--ask-settings`)."""

    margin: float = 0.05
    """A query matches a prompt when the cosine of its semantic token with the prompt reaches the
    best cosine any canonical phrase ("object", "things", "stuff", "texture") has with any of the
    field's queries, plus this fraction of the way from there to 1. The canonical phrases name
    nothing in particular, so their best cosine is the level an unrelated phrase reaches by chance
    in this embedding space (simulated teacher: ~0.1, where named objects reach 0.97; with CLIP's
    narrow cosines ~0.2 vs ~0.3). 0: the canonical level itself."""
    min_relevance: float = 0.5
    """...and when its LERF relevance to the prompt (against the canonical phrases and the other
    prompts asked with it) is at least this: 0.5 means the prompt is closer to the query than every
    negative phrase is. A mask of the blue mug is then not an answer to "red mug" asked together
    with "blue mug"."""
    alpha: float = 0.5
    """Opacity of a mask's tint in the overlays."""
    min_width: int = 640
    """Overlays are upscaled by an integer factor (nearest neighbour: pixels stay visible) to at
    least this width."""

    def __post_init__(self) -> None:
        if not (0 <= self.margin <= 1 and 0 <= self.min_relevance <= 1 and 0 <= self.alpha <= 1) or self.min_width < 1:
            raise ValueError("margin, min_relevance and alpha must be in [0, 1] and min_width >= 1")


@dataclass
class PromptAnswer:
    """One prompt in one view."""

    prompt: str
    mask: np.ndarray  # [H, W] bool at the image's size (all False when nothing matched)
    relevance: float  # LERF relevance (probability) of the view's best active query; nan: no active query
    matched: bool  # a query that matches the prompt is active in the view

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


@dataclass
class ViewAnswer:
    """Every prompt in one view."""

    view: int  # scene view index
    name: str
    split: str  # "train" or "test"
    render_hw: tuple[int, int]  # resolution the probabilities were rendered at
    answers: list[PromptAnswer] = field(default_factory=list)


class SceneQuery:
    """A trained scene loaded once, answering prompts view by view (prompt-independent work cached)."""

    def __init__(self, scene, geometry: str | os.PathLike, checkpoint: str | os.PathLike,
                 embeddings: str | os.PathLike, settings: QuerySettings, ask: AskSettings | None = None) -> None:
        import torch

        from maskfield.io.geometry import read_geometry
        from maskfield.stages.mask import check_pairing, load_model, read_checkpoint
        from maskfield.teachers.text import load_text_encoder

        state = read_checkpoint(checkpoint)
        self.cache = read_geometry(geometry)
        self.config = state["config"]
        check_pairing(self.config, self.cache, scene, checkpoint, geometry)
        self.model = load_model(state, self.cache)
        self.scene, self.settings, self.ask = scene, settings, ask or AskSettings()
        with torch.no_grad():
            self.semantics = self.model.heads.semantics().numpy()  # [Q, D]
        self.encoder = load_text_encoder(text_model_of(embeddings, self.config, checkpoint))
        self._probs: dict[tuple[int, str], np.ndarray] = {}
        self._active: dict[tuple[int, str], np.ndarray] = {}
        self._text: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ prompt-independent, cached

    def cache_index(self, view: int, split: str) -> int:
        """Index in the geometry cache of scene view `view` in `split` ("train" or "test")."""
        hits = np.flatnonzero((self.cache.view_index == view) & (self.cache.split == (1 if split == "test" else 0)))
        if not len(hits):
            raise MaskfieldError(f"view {self.scene.view_names[view]} ({split}) is not in the geometry cache; "
                                 f"rerun the `geometry` rule.")
        return int(hits[0])

    def probabilities(self, view: int, split: str) -> np.ndarray:
        """[Q, h, w] float32 query-mask probabilities of a view, rendered once."""
        key = (view, split)
        if key not in self._probs:
            import torch

            with torch.no_grad():
                probs = self.model.probabilities(self.cache_index(view, split)).numpy().astype(np.float32)
            self._probs[key] = probs
            self._active[key] = probs.reshape(len(probs), -1).max(axis=1) >= self.settings.min_activation
        return self._probs[key]

    def encode(self, phrases: list[str]) -> dict[str, np.ndarray]:
        """Unit text features of `phrases` ([D] each), each phrase encoded once."""
        new = [p for p in dict.fromkeys(phrases) if p not in self._text]
        if new:
            self._text.update(zip(new, self.encoder(new)))
        return {p: self._text[p] for p in phrases}

    # ------------------------------------------------------------ per prompt

    def matching_queries(self, prompts: list[str]) -> tuple[dict[str, np.ndarray], dict, dict]:
        """(text features, negatives [K, D] and the [Q] bool mask of the queries that match) per prompt."""
        text = self.encode([*prompts, *CANONICAL_PHRASES])
        negatives = prompt_negatives(prompts, text, self.settings)
        chance = float(cosine_relevance(self.semantics, np.stack([text[c] for c in CANONICAL_PHRASES])).max())
        level = chance + self.ask.margin * (1 - chance)
        T = self.settings.relevance_temperature
        matching = {p: (cosine_relevance(self.semantics, text[p][None])[:, 0] >= level)
                    & (lerf_relevance(self.semantics, text[p], negatives[p], T) >= self.ask.min_relevance) for p in prompts}
        return text, negatives, matching

    def answer_view(self, view: int, split: str, prompts: list[str], prepared=None) -> ViewAnswer:
        """Every prompt's mask in one view (`prepared`: `matching_queries(prompts)`, to reuse it)."""
        text, negatives, matching = prepared or self.matching_queries(prompts)
        probs = self.probabilities(view, split)
        active = self._active[(view, split)]
        hw = (self.scene.height, self.scene.width)
        out = ViewAnswer(view, self.scene.view_names[view], split, tuple(probs.shape[1:]))
        for p in prompts:
            rel = lerf_relevance(self.semantics[active], text[p], negatives[p], self.settings.relevance_temperature)
            best = float(rel.max()) if len(rel) else float("nan")
            matched = bool((matching[p] & active).any())
            mask = (query_mask(probs, self.semantics, text[p], negatives[p], hw, self.settings).mask if matched
                    else np.zeros(hw, bool))
            out.answers.append(PromptAnswer(p, mask, best, matched))
        return out

    def ask_views(self, prompts: list[str], views: list[tuple[int, str]]) -> list[ViewAnswer]:
        """Answers of `prompts` in each (scene view, split) of `views`."""
        if not prompts:
            raise MaskfieldError("no prompt given; name at least one, e.g. maskfield query ... \"red mug\".")
        prepared = self.matching_queries(prompts)
        return [self.answer_view(v, split, prompts, prepared) for v, split in views]

    # ------------------------------------------------------------ pictures and words

    def picture(self, va: ViewAnswer):
        """The overlay of one view's answers (PIL image): masks in the prompts' colours, a legend."""
        colors = class_colors(len(va.answers))
        c = self.config
        head = f"{self.scene.dataset}/{self.scene.name} {va.name} ({va.split}) - {c['method']}-{c['backend']}, teacher={c['teacher']}"
        lines = [LegendLine(head)]
        if va.render_hw != (self.scene.height, self.scene.width):
            lines.append(LegendLine(f"rendered at {va.render_hw[1]}x{va.render_hw[0]}, masks upsampled to the image"))
        lines += [LegendLine(answer_text(a, self.scene), tuple(col)) for a, col in zip(va.answers, colors)]
        masks = [a.mask for a in va.answers]
        scale = overlay_scale(self.scene.width, self.ask.min_width)
        return overlay_picture(self.scene.images[va.view], masks, colors, lines, scale, self.ask.alpha)


def text_model_of(embeddings: str | os.PathLike, config: dict, checkpoint) -> str:
    """The text model named by embeddings.h5, checked against the one the mask field was trained with."""
    from maskfield.io.h5 import open_h5

    with open_h5(embeddings, "embeddings cache", "clip_embeddings") as f:
        model = str(f.attrs.get("model", ""))
    if not model:
        raise MaskfieldError(f"embeddings cache {embeddings} names no text model; rerun the `clip_embeddings` rule.")
    if config.get("text_model") and config["text_model"] != model:
        raise MaskfieldError(f"mask-field checkpoint {checkpoint} was trained with text model {config['text_model']!r} "
                             f"but {embeddings} names {model!r}; pass the embeddings.h5 of its training.")
    return model


def answer_text(a: PromptAnswer, scene) -> str:
    """'red mug: 412 px (2.1%), relevance 0.998' or 'zebra: nothing (best relevance 0.71)'."""
    rel = "no active query" if np.isnan(a.relevance) else f"relevance {a.relevance:.3f}"
    if not a.matched:
        return f'"{a.prompt}": nothing ({"best " + rel if not np.isnan(a.relevance) else rel})'
    return f'"{a.prompt}": {a.pixels} px ({100 * a.pixels / (scene.height * scene.width):.1f}%), {rel}'


def select_views(scene, which: str) -> list[tuple[int, str]]:
    """(scene view, split) pairs named by --views: test, train, all, or comma-separated view names."""
    test = [(int(v), "test") for v in scene.test_ids]
    train = [(int(v), "train") for v in scene.train_ids]
    if which in ("test", "train", "all"):
        return {"test": test, "train": train, "all": train + test}[which]
    names = [n.strip() for n in which.split(",") if n.strip()]
    index = {n: i for i, n in enumerate(scene.view_names)}
    unknown = [n for n in names if n not in index]
    if unknown or not names:
        raise MaskfieldError(f"--views {which!r}: {unknown or 'no view'} is not a view of {scene.name}; use test, train, all "
                             f"or names such as {', '.join(scene.view_names[:3])}.")
    tests = {int(v) for v in scene.test_ids}
    return [(index[n], "test" if index[n] in tests else "train") for n in names]


def write_overlays(sq: SceneQuery, answers: list[ViewAnswer], out: str | os.PathLike) -> Path:
    """One overlay PNG per view, `<out>/<view name>.png`; the folder is replaced as a whole."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p.suffix != ".png" for p in out.iterdir())):
        raise MaskfieldError(f"--out {out} exists and holds more than query overlays; choose a new or empty folder.")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for va in answers:
            sq.picture(va).save(tmp / f"{va.name}.png", compress_level=1)
    return out


def summary_lines(answers: list[ViewAnswer], scene) -> list[str]:
    """One line per view, then one per prompt that matched in no view."""
    lines = [f"{va.name} ({va.split}): " + "; ".join(answer_text(a, scene) for a in va.answers) for va in answers]
    for i, a in enumerate(answers[0].answers if answers else []):
        if not any(va.answers[i].matched for va in answers):
            lines.append(f'"{a.prompt}" matches nothing in the {len(answers)} view(s) asked.')
    return lines


def json_object(text: str | None, where: str) -> dict:
    """A JSON object given on the command line, as a dict."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise MaskfieldError(f"{where} is not valid JSON ({exc}); pass a JSON object.") from exc
    if not isinstance(data, dict):
        raise MaskfieldError(f"{where} must be a JSON object, got {type(data).__name__}.")
    return data


def _run(args: argparse.Namespace) -> None:
    from maskfield.stages.trained import require_files, trained_scene_from_args

    trained = trained_scene_from_args(args)
    p = trained.paths
    require_files({"geometry cache": p.geometry, "mask-field checkpoint": p.checkpoint, "embeddings cache": p.embeddings},
                  trained)
    q = from_dict(QuerySettings, {**to_dict(trained.inference.query), **json_object(args.settings, "--settings")},
                  where="inference.query with --settings")
    sq = SceneQuery(trained.scene, p.geometry, p.checkpoint, p.embeddings, q, parse_settings(AskSettings, args.ask_settings))
    answers = sq.ask_views(list(args.prompts), select_views(trained.scene, args.views))
    out = Path(args.out or Path(args.results) / "queries" / args.dataset / args.scene)
    write_overlays(sq, answers, out)
    for line in summary_lines(answers, trained.scene):
        print(line)
    print(f"overlays: {out}/<view>.png ({len(answers)} views)")


def register(subparsers, name: str) -> None:
    from maskfield.backends.registry import backend_names
    from maskfield.stages.trained import add_trained_scene_args

    p = subparsers.add_parser(name, help="ask a trained scene about text prompts; overlay PNGs and a line per view")
    p.add_argument("prompts", nargs="+", help="text prompts, e.g. \"red mug\" \"blue book\"")
    add_trained_scene_args(p, backend_names())
    p.add_argument("--views", default="test", help="test, train, all, or comma-separated view names (default test)")
    p.add_argument("--out", default=None, help="folder of the overlays (default results/queries/<dataset>/<scene>)")
    p.add_argument("--settings", default="{}", help="JSON object of inference.query settings on top of the config's")
    p.add_argument("--ask-settings", default="{}", help="JSON object of AskSettings (margin, min_relevance, alpha, min_width)")
    p.set_defaults(func=_run)
