"""Image-generation metrics over feature arrays: realism, diversity, controllability, novelty.

Every function accepts numpy arrays or torch tensors (one row per sample), computes in float64 on
the CPU and returns plain Python floats. Pairwise distances are taken in row chunks with
torch.cdist, so 10,000 x 10,000 comparisons need a few hundred MB and a few seconds.

FID, KID and coverage depend on the number of samples N: compare runs at equal N and report the
real-vs-real value at that N beside them (docs/design.md, "Metric pitfalls").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.linalg import LinAlgWarning, sqrtm

from genlab.errors import UsageError

_CHUNK = 2048  # rows per torch.cdist call: 2048 x 10,000 float64 distances is 160 MB


# ---- input checks and chunked distances --------------------------------------------------------

def _as_matrix(x, name: str, *, flatten: bool = False) -> torch.Tensor:
    """Array or tensor -> (N, D) float64 CPU tensor; with flatten, (N, C, H, W) images -> (N, C*H*W)."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if flatten and t.dim() > 2:
        t = t.flatten(1)
    if t.dim() != 2 or t.shape[0] == 0:
        expected = "(N, ...) with N >= 1" if flatten else "(N samples, D features) with N >= 1"
        raise UsageError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise UsageError(f"{name} contains NaN or inf")
    return t


def _as_pair(a, b, names: tuple[str, str], *, flatten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_matrix(a, names[0], flatten=flatten), _as_matrix(b, names[1], flatten=flatten)
    if x.shape[1] != y.shape[1]:
        raise UsageError(f"{names[0]} and {names[1]} must have the same number of features per row, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    return x, y


def _as_labels(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() != 1 or len(t) == 0 or t.is_floating_point() or t.is_complex():
        raise UsageError(f"{name} must be a non-empty 1-D array of integer class ids, "
                         f"got shape {tuple(t.shape)} and dtype {t.dtype}")
    return t.long()


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (all-zero rows stay at the origin)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _cross_distances(a: torch.Tensor, b: torch.Tensor):
    """Yield (rows, D) for chunks of a's rows, D[i, j] = ||a[rows][i] - b[j]||, shape (chunk, len(b))."""
    for start in range(0, len(a), _CHUNK):
        rows = slice(start, min(start + _CHUNK, len(a)))
        yield rows, torch.cdist(a[rows], b)


def _knn_radii(x: torch.Tensor, k: int, name: str) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest *other* row, shape (N,)."""
    return _knn_radii_for(x, (k,), name)[:, 0]


def _knn_radii_for(x: torch.Tensor, ks: tuple[int, ...], name: str) -> torch.Tensor:
    """(N, len(ks)): column i the distance from each row of x to its ks[i]-th nearest other row, one pass for all."""
    for k in ks:
        if not (isinstance(k, int) and k >= 1):
            raise UsageError(f"k must be a positive integer, got {k!r}")
    top = max(ks)
    if len(x) < top + 1:
        raise UsageError(f"{name} needs at least k + 1 = {top + 1} rows for k-NN radii, got {len(x)}")
    radii = torch.empty(len(x), len(ks), dtype=x.dtype)
    for rows, d in _cross_distances(x, x):
        own = torch.arange(rows.start, rows.stop)
        d[own - rows.start, own] = math.inf  # a point is not its own neighbour
        nearest = d.topk(top, dim=1, largest=False).values   # sorted; kthvalue is much slower on CPU
        radii[rows] = nearest[:, [k - 1 for k in ks]]
    return radii


def real_radii(real_feats, ks: tuple[int, ...] = (3, 5)) -> dict[int, torch.Tensor]:
    """The k-NN radii of the L2-normalised real rows for each k in `ks`, {k: (N,)}, from one pass over their
    distances. precision_recall and density_coverage take them as `radii` when one real set meets several fake
    ones: on 54,000 real rows that pass is most of either metric's time."""
    radii = _knn_radii_for(_unit(_as_matrix(real_feats, "real_feats")), tuple(ks), "real_feats")
    return {k: radii[:, i] for i, k in enumerate(ks)}


def _given_radii(radii: dict | None, k: int, r: torch.Tensor) -> torch.Tensor:
    """The real rows' k-NN radii: from `radii` ({k: (N,)}, made by real_radii) when it has k, else computed."""
    if radii is None or k not in radii:
        return _knn_radii(r, k, "real_feats")
    given = torch.as_tensor(radii[k]).to("cpu", torch.float64)
    if given.shape != (len(r),):
        raise UsageError(f"radii[{k}] has shape {tuple(given.shape)}; expected ({len(r)},), one per real row "
                         "(real_radii of these real features)")
    return given


def _sqrtm_product(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """sqrtm(a @ b), adding eps * I to a and b when the product is singular."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)  # how scipy reports a singular product
        try:
            root = sqrtm(a @ b)
        except LinAlgWarning:
            root = None
    if root is None or not np.isfinite(root).all():
        offset = eps * np.eye(len(a))
        root = sqrtm((a + offset) @ (b + offset))
    return root


# ---- realism and diversity of the distribution ------------------------------------------------

def fid(real_feats, fake_feats, eps: float = 1e-6) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule").

    Fit Gaussians (mu_r, S_r) and (mu_f, S_f) to the two feature sets (N, D) and return
        FID = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)).
    If the product is singular (N <= D, or dead features), eps * I is added to both covariances.
    Lower is better; the estimate is biased upwards at small N.
    """
    r, f = _as_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    if len(r) < 2 or len(f) < 2:
        raise UsageError(f"fid needs at least 2 rows per set to fit a covariance, got {len(r)} and {len(f)}")
    r, f = r.numpy(), f.numpy()
    mu_r, mu_f = r.mean(0), f.mean(0)
    s_r, s_f = np.atleast_2d(np.cov(r, rowvar=False)), np.atleast_2d(np.cov(f, rowvar=False))
    covmean = _sqrtm_product(s_r, s_f, eps)
    if np.iscomplexobj(covmean):
        # S_r S_f has real non-negative eigenvalues, so any imaginary part is round-off.
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, abs(np.trace(covmean.real))):
            raise UsageError(f"fid: sqrtm(S_r S_f) has an imaginary part of {imag:.3g}; "
                             "the covariances are badly conditioned (too few rows for the feature dim?)")
        covmean = covmean.real
    value = np.sum((mu_r - mu_f) ** 2) + np.trace(s_r) + np.trace(s_f) - 2 * np.trace(covmean)
    return max(float(value), 0.0)  # round-off can leave a tiny negative for identical sets


def kid(real_feats, fake_feats, n_subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

    Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 between random
    subsets X, Y of m = min(subset_size, N_real, N_fake) rows each:
        MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
                - 2 sum_{i,j} k(x_i, y_j) / m^2,
    over n_subsets draws (seeded). Returns (mean, std) over the draws; the mean can be slightly
    negative when the distributions match.
    """
    r, f = _as_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    if n_subsets < 1 or subset_size < 2:
        raise UsageError(f"kid needs n_subsets >= 1 and subset_size >= 2, got {n_subsets} and {subset_size}")
    m = min(subset_size, len(r), len(f))
    if m < 2:
        raise UsageError(f"kid needs at least 2 rows per set, got {len(r)} and {len(f)}")
    dim, one = r.shape[1], torch.ones((), dtype=r.dtype)
    gen = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(n_subsets):
        x = r[torch.randperm(len(r), generator=gen)[:m]]
        y = f[torch.randperm(len(f), generator=gen)[:m]]
        # (x.y / D + 1)^3 for all pairs, (m, m); addmm and in-place pow avoid three temporaries
        k_xx, k_yy, k_xy = (torch.addmm(one, a, b.T, alpha=1 / dim).pow_(3)
                            for a, b in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        estimates.append((within - 2 * k_xy.mean()).item())
    return float(np.mean(estimates)), float(np.std(estimates))


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs").

    probs: (N, C) class probabilities p(y|x) from a judge classifier. Within each of `splits`
    equal parts, with p(y) the part's mean row,
        IS = exp( mean_x KL(p(y|x) || p(y)) ),
    which runs from 1 (every sample predicted alike) to C (confident and balanced over classes).
    Returns (mean, std) over the parts.
    """
    p = _as_matrix(probs, "probs")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-3):
        raise UsageError("probs must be rows of class probabilities (non-negative, each summing to 1); "
                         "apply softmax to logits first")
    if not 1 <= splits <= len(p):
        raise UsageError(f"splits must be between 1 and the number of rows ({len(p)}), got {splits}")
    scores = []
    for part in torch.tensor_split(p, splits):
        p_y = part.mean(0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, p_y)).sum(1).mean()  # 0 log 0 = 0
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(real_feats, fake_feats, k: int = 3, radii: dict | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall
    Metric for Assessing Generative Models").

    The manifold of a set X is the union of balls B(x, NN_k(x)), NN_k(x) the distance from x to
    its k-th nearest neighbour in X. With real rows r_i (N of them) and fake rows f_j (M):
        precision = (1/M) sum_j 1[f_j in manifold(real)]   (realism)
        recall    = (1/N) sum_i 1[r_i in manifold(fake)]   (diversity)
    Rows are L2-normalised first: on raw post-ReLU features junk lands near the origin inside the
    large balls of faint real images (docs/design.md). Recall is inflated by scattered garbage; read
    diversity from `density_coverage` as well. `radii`: the real rows' radii from `real_radii`, if at hand.
    """
    r, f = _as_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    r, f = _unit(r), _unit(f)
    real_radii, fake_radii = _given_radii(radii, k, r), _knn_radii(f, k, "fake_feats")
    fake_in_real = torch.zeros(len(f), dtype=torch.bool)
    real_in_fake = torch.zeros(len(r), dtype=torch.bool)
    for rows, d in _cross_distances(f, r):  # d: (chunk of fakes, N_real)
        fake_in_real[rows] = (d <= real_radii).any(1)
        real_in_fake |= (d <= fake_radii[rows, None]).any(0)
    return fake_in_real.double().mean().item(), real_in_fake.double().mean().item()


def density_coverage(real_feats, fake_feats, k: int = 5, radii: dict | None = None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
    Generative Models").

    With B_i = B(r_i, NN_k(r_i)) the k-NN ball of real row r_i (N real rows, M fake rows):
        density  = 1/(k M) sum_j sum_i 1[f_j in B_i]     (realism; ~1 when fake matches real)
        coverage = (1/N) sum_i 1[exists j: f_j in B_i]    (diversity; in [0, 1])
    Rows are L2-normalised first, as for precision_recall. Coverage falls with N: compare at equal N.
    `radii`: the real rows' radii from `real_radii`, if at hand.
    """
    r, f = _as_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    r, f = _unit(r), _unit(f)
    real_radii = _given_radii(radii, k, r)
    inside_count = 0
    covered = torch.zeros(len(r), dtype=torch.bool)
    for _, d in _cross_distances(f, r):
        inside = d <= real_radii  # (chunk of fakes, N_real): fake j lies in real ball B_i
        inside_count += int(inside.sum())
        covered |= inside.any(0)
    return inside_count / (k * len(f)), covered.double().mean().item()


def class_coverage(real_feats, real_labels, fake_feats, fake_labels, k: int = 5) -> float:
    """Coverage within each class, averaged over the classes of `fake_labels`: the real rows of class c
    against the fakes requested as c. Mixed-class coverage misses a conditional model whose every class
    collapsed to one point (each point covers a few real balls of its class); per class it is ~1/N_c.
    Like coverage, it falls with N: compare at equal per-class counts."""
    r, f = _as_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    ry, fy = _as_labels(real_labels, "real_labels"), _as_labels(fake_labels, "fake_labels")
    if len(ry) != len(r) or len(fy) != len(f):
        raise UsageError(f"labels must match the rows: {len(ry)} real labels for {len(r)} rows, "
                         f"{len(fy)} fake labels for {len(f)} rows")
    values = []
    for c in fy.unique().tolist():
        real_c = r[ry == c]
        if len(real_c) <= k:
            raise UsageError(f"class {c} has {len(real_c)} real rows; per-class coverage needs more than k={k}")
        values.append(density_coverage(real_c, f[fy == c], k)[1])
    return float(np.mean(values))


# ---- diversity over classes and controllability -----------------------------------------------

def class_entropy(pred_labels, num_classes: int) -> float:
    """Entropy in nats of the predicted-class histogram: H = -sum_c p_c log p_c, where p_c is the
    fraction of samples the judge assigns to class c. 0 when one class is always predicted,
    log(num_classes) when all classes occur equally often (see normalised_class_entropy)."""
    labels = _as_labels(pred_labels, "pred_labels")
    if num_classes < 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise UsageError(f"pred_labels must lie in [0, num_classes = {num_classes}), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    p = torch.bincount(labels, minlength=num_classes).double() / len(labels)
    return max(-torch.xlogy(p, p).sum().item(), 0.0)


def normalised_class_entropy(pred_labels, num_classes: int) -> float:
    """class_entropy / log(num_classes), in [0, 1]: 1.0 means every class is predicted equally often."""
    if num_classes < 2:
        raise UsageError(f"normalised_class_entropy needs num_classes >= 2, got {num_classes}")
    return class_entropy(pred_labels, num_classes) / math.log(num_classes)


def conditional_accuracy(pred_labels, requested_labels) -> float:
    """Controllability: the fraction of conditional samples that the judge classifies as the class
    they were generated for, mean_i 1[pred_i == requested_i]."""
    pred, requested = _as_labels(pred_labels, "pred_labels"), _as_labels(requested_labels, "requested_labels")
    if pred.shape != requested.shape:
        raise UsageError(f"pred_labels and requested_labels must have the same length, "
                         f"got {len(pred)} and {len(requested)}")
    return (pred == requested).double().mean().item()


# ---- novelty ----------------------------------------------------------------------------------

def nearest_train_distances(train) -> np.ndarray:
    """For each training image (N, ...) the pixel-space L2 distance to its nearest other training
    image, shape (N,). Precompute once per dataset and pass to memorisation_fraction."""
    return _knn_radii(_as_matrix(train, "train", flatten=True), 1, "train").numpy()


def memorisation_fraction(samples, train, train_nn_dist=None) -> float:
    """Fraction of samples that are near-copies of a training image, in pixel space.

    For sample s with nearest training image t (L2 over flattened pixels), s is memorised when
        ||s - t|| < NN(t) / 3,
    NN(t) the distance from t to its nearest other training image (nearest_train_distances). The
    threshold adapts to how crowded the data is around t. This catches only near-copies: blurred,
    shifted or recoloured training images are not flagged, and a training image with an exact
    duplicate in the set has NN(t) ~ 0, so copies of it are never flagged. Samples and train must
    share one pixel scale (e.g. both in [-1, 1]). Without `train_nn_dist`, NN(t) is computed for the
    training images that are some sample's nearest only (at most N of them, not the whole set).
    """
    s, t = _as_pair(samples, train, ("samples", "train"), flatten=True)
    if train_nn_dist is not None:
        train_nn_dist = torch.as_tensor(train_nn_dist).to("cpu", torch.float64)
        if train_nn_dist.shape != (len(t),):
            raise UsageError(f"train_nn_dist must have shape ({len(t)},), one distance per training "
                             f"image, got {tuple(train_nn_dist.shape)}")
    elif len(t) < 2:
        raise UsageError(f"train needs at least k + 1 = 2 rows for k-NN radii, got {len(t)}")
    dist, nearest = torch.empty(len(s), dtype=torch.float64), torch.empty(len(s), dtype=torch.long)
    for rows, d in _cross_distances(s, t):
        dist[rows], nearest[rows] = d.min(1)
    if train_nn_dist is None:
        used, back = nearest.unique(return_inverse=True)
        nn = torch.empty(len(used), dtype=torch.float64)
        for rows, d in _cross_distances(t[used], t):
            d[torch.arange(len(d)), used[rows]] = math.inf  # an image is not its own neighbour
            nn[rows] = d.min(1).values
        nn_of_nearest = nn[back]
    else:
        nn_of_nearest = train_nn_dist[nearest]
    return (dist < nn_of_nearest / 3).double().mean().item()


# ---- paired metrics: an output against its target (image-to-image translation) ----------------

def _unit_images(x) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.dim() != 4:
        raise UsageError(f"images have shape {tuple(t.shape)}; expected (N, C, H, W) in [-1, 1]")
    return (t.clamp(-1, 1) + 1) / 2


def l1_per_image(outputs, targets) -> np.ndarray:
    """Mean absolute error per image, in [0, 1] pixel units."""
    a, b = _unit_images(outputs), _unit_images(targets)
    return (a - b).abs().flatten(1).mean(1).numpy()


def psnr_per_image(outputs, targets) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB, data range 1 (identical images: capped at 100 dB)."""
    mse = (_unit_images(outputs) - _unit_images(targets)).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy()


def ssim_per_image(outputs, targets, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004): local means, variances and covariance under a
    Gaussian window, C1 = (0.01)^2, C2 = (0.03)^2 for data range 1, averaged over pixels and channels. The window
    is 7 (not the paper's 11) since genlab's images are small; the border where the window does not fit is left out."""
    a, b = _unit_images(outputs), _unit_images(targets)
    c = a.shape[1]
    window = min(window, a.shape[-1])
    g = torch.exp(-(torch.arange(window, dtype=torch.float64) - (window - 1) / 2) ** 2 / (2 * sigma ** 2))
    k = (g[:, None] * g[None, :]) / g.sum() ** 2
    k = k.expand(c, 1, window, window)
    blur = lambda x: torch.nn.functional.conv2d(x, k, groups=c)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).numpy()
