# Load the project's Hypothesis profiles (`ci` by default, `dev` with HYPOTHESIS_PROFILE=dev).
import fastdropout_nb.testing  # noqa: F401
