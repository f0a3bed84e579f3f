"""Fast dropout training and dropout distillation, derived, implemented and verified in notebooks

Modules:

- `fastdropout_nb.arrays`: One small helper decides whether a computation runs in NumPy or in torch, and a handful of checks turn bad input into a `ValueError` that names the argument.
- `fastdropout_nb.bayes`: Fast dropout's objective is exactly the expected log-likelihood under multiplicative Gaussian weight noise with α = p/(1−p), hence a lower bound (an ELBO) on that model's evidence; and the appendix's regularisation by individual informativeness, a per-feature L2 penalty.
- `fastdropout_nb.data`: Every data set of the papers' tables, found in one data directory, verified against a sha256 registry before use, downloaded with pooch when missing, and turned into the binarised unigram + bigram features that NBSVM and fast dropout use.
- `fastdropout_nb.distill`: The ideal dropout predictor, why weight scaling is only a heuristic, Monte Carlo dropout, and dropout distillation (Bulò, Porzi & Kontschieder 2016) with Theorem 1 proved and checked exactly.
- `fastdropout_nb.distillation_protocols`: The experiments of Bulò, Porzi & Kontschieder (2016) and this package's digits settings: the data splits, the teachers and students, the distillation runs, the inference costs and the MNIST LeNet / LeNetAll protocol, built on the methods of chapter 05.
- `fastdropout_nb.experiments`: The papers' published numbers, written down once; each table of ours computed cell by cell, saved atomically, and rendered beside the paper's.
- `fastdropout_nb.gaussian`: The exact mean and variance of the dropout sum Y = Σᵢ wᵢ xᵢ zᵢ, for dense, sparse and torch inputs; the central limit theorem that turns Y into a Gaussian, and a measured map of where that approximation fails.
- `fastdropout_nb.logistic`: The objective that dropout training of logistic regression implies, its Gaussian, quadrature and closed-form approximations with their gradients checked against every dropout mask, the multinomial case, and a scikit-learn estimator fitted by a trust-region Newton method with the objective's exact Hessian-vector products.
- `fastdropout_nb.moments`: Mean and variance of sigmoid, log-sigmoid, tanh, ReLU, LeakyReLU, GELU, softplus, softmax, the exponential and the maximum of two Gaussians, for Gaussian inputs, exact where possible and approximated in closed form otherwise, each with its error measured against quadrature.
- `fastdropout_nb.nn`: Moment-propagating PyTorch layers (`FastDropoutLinear`, `MomentReLU`/`Sigmoid`/`Tanh`), the three fast-dropout losses, `FastDropoutMLP` and the real dropout net that shares its weights, three ways to predict with a dropout net, and `delta_moments`, the variance of a ReLU net's outputs with every mask's covariance carried to them.
- `fastdropout_nb.progress`: Every long loop of the package (training epochs, Monte Carlo prediction batches, table cells, downloads) reports through a `tqdm` bar: drawn on a terminal, silent in a log, a pipe or CI.
- `fastdropout_nb.propagation`: `moment_propagation` turns an ordinary trained dropout net, written as people write them (a custom `nn.Module` with `F.dropout`, residual blocks, BatchNorm, pooling, GELU), into a deterministic predictor of its mask-averaged output: one rule per node of the net's `torch.fx` graph, each derived here.
- `fastdropout_nb.testing`: Hypothesis profiles, Monte Carlo tolerances derived from standard errors, exact enumeration of dropout masks, and adaptive quadrature for 1-D Gaussian expectations.
- `fastdropout_nb.uncertainty`: The logits' full covariance under dropout by statistical linearisation of the moment-propagating twin, the Gaussian softmax with that covariance, and the predictive entropy, expected entropy and mutual information of standard, Monte Carlo, moment-propagated and distilled predictions."""

__version__ = "0.1.0"
