"""Fast dropout training and dropout distillation, derived, implemented and verified in notebooks

Modules:

- `fastdropout_nb.arrays`: One small helper decides whether a computation runs in NumPy or in torch, and a handful of checks turn bad input into a `ValueError` that names the argument.
- `fastdropout_nb.testing`: Hypothesis profiles, Monte Carlo tolerances derived from standard errors, exact enumeration of dropout masks, and adaptive quadrature for 1-D Gaussian expectations."""

__version__ = "0.1.0"
