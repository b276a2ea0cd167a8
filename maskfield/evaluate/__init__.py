"""Benchmark metrics (`metrics`, public API) and the paper-shaped tables (`tables`)."""
