"""Stage functions (paths + settings in, artifact out) and their CLI registration."""
