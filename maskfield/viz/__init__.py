"""Pictures of results: class colours, mask overlays (Pillow, for `maskfield query`), figures of the
test views (matplotlib, for the workflow's `figures` rule) and contact sheets.

numpy and Pillow at import; matplotlib only inside `maskfield.viz.figures`, which the query
command never imports (its overlays must cost milliseconds per view).
"""
