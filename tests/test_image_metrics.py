"""Maths checks for genlab.evaluation.image_metrics on synthetic features with known answers."""

import math

import numpy as np
import pytest
import torch

from genlab.evaluation import image_metrics as im

D = 16  # feature dim of the synthetic mixtures


def mixture(rng, n, centers, clusters):
    """n rows from the equal-weight Gaussian mixture (unit variance) over the chosen centers."""
    return centers[rng.choice(clusters, n)] + rng.normal(size=(n, centers.shape[1]))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def centers(rng):
    return 5 * rng.normal(size=(10, D))  # 10 well-separated clusters, also after L2 normalisation


# ---- FID ----

def test_fid_of_a_set_against_itself_is_zero(rng):
    x = rng.normal(size=(2000, D))
    assert im.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    assert im.fid(torch.from_numpy(x).float(), x) == pytest.approx(0.0, abs=1e-4)


def test_fid_matches_closed_form_for_diagonal_gaussians(rng):
    mu1, mu2 = np.zeros(8), np.linspace(-1, 1, 8)
    s1, s2 = np.full(8, 1.0), np.linspace(0.5, 4.0, 8)  # variances
    x = mu1 + np.sqrt(s1) * rng.normal(size=(20000, 8))
    y = mu2 + np.sqrt(s2) * rng.normal(size=(20000, 8))
    exact = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert im.fid(x, y) == pytest.approx(exact, rel=0.02)


def exact_gaussian(rng, n, mean, cov):
    """n rows whose sample mean and (unbiased) sample covariance are exactly `mean` and `cov`."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T   # whitened: sample cov = I
    return mean + z @ np.linalg.cholesky(cov).T


def psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_fid_of_same_mean_different_covariance_is_the_trace_term(rng):
    # N(0, I) vs N(0, 4I) in d dims: FID = d * (1 + 4 - 2 * 2) = d; only the covariance term is nonzero
    d = 16
    x = exact_gaussian(rng, 500, np.zeros(d), np.eye(d))
    y = exact_gaussian(rng, 700, np.zeros(d), 4 * np.eye(d))
    assert im.fid(x, y) == pytest.approx(d, rel=1e-6)
    # full, non-commuting covariances: Tr((S_r S_f)^1/2) = Tr((S_r^1/2 S_f S_r^1/2)^1/2)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s_r, s_f = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    root = psd_sqrt(s_r)
    exact = np.trace(s_r) + np.trace(s_f) - 2 * np.trace(psd_sqrt(root @ s_f @ root))
    x, y = exact_gaussian(rng, 500, np.zeros(d), s_r), exact_gaussian(rng, 500, np.zeros(d), s_f)
    assert exact > 1.0 and im.fid(x, y) == pytest.approx(exact, rel=1e-6)


def test_fid_survives_singular_covariances(rng):
    x = rng.normal(size=(40, 64))  # fewer rows than features: rank-deficient covariance
    x[:, :5] = 0.0                 # and dead (always-zero) features, as after a ReLU
    y = x + 0.5
    assert im.fid(x, x) == pytest.approx(0.0, abs=1e-4)
    assert im.fid(x, y) == pytest.approx(0.25 * 64, rel=1e-3)  # only the mean shift remains


# ---- KID ----

def test_kid_near_zero_for_same_distribution_and_positive_when_shifted(rng):
    x, y = rng.normal(size=(2000, D)), rng.normal(size=(2000, D))
    same_mean, same_std = im.kid(x, y, n_subsets=20, subset_size=500)
    shifted_mean, shifted_std = im.kid(x, y + 0.5, n_subsets=20, subset_size=500)
    assert abs(same_mean) < 0.01
    assert shifted_mean > 0.1 and shifted_mean > 10 * shifted_std
    assert same_std > 0


def test_kid_caps_subset_size_and_is_seeded(rng):
    x, y = rng.normal(size=(50, D)), rng.normal(size=(80, D)) + 1.0
    assert im.kid(x, y, n_subsets=5) == im.kid(x, y, n_subsets=5)  # subset_size 1000 -> 50
    assert im.kid(x, y, n_subsets=5, seed=1) != im.kid(x, y, n_subsets=5, seed=2)


# ---- Inception Score ----

@pytest.mark.parametrize("num_classes", [2, 10])
def test_inception_score_bounds(num_classes):
    balanced = np.eye(num_classes)[np.arange(100 * num_classes) % num_classes]  # confident, balanced
    mean, std = im.inception_score(balanced, splits=10)
    assert mean == pytest.approx(num_classes) and std == pytest.approx(0.0, abs=1e-9)
    collapsed = np.eye(num_classes)[np.zeros(1000, dtype=int)]
    assert im.inception_score(collapsed)[0] == pytest.approx(1.0)
    uncertain = np.full((1000, num_classes), 1.0 / num_classes)
    assert im.inception_score(uncertain)[0] == pytest.approx(1.0)


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        im.inception_score(np.random.default_rng(0).normal(size=(100, 10)))


# ---- precision / recall, density / coverage ----

def test_precision_recall_high_for_same_distribution(rng, centers):
    real, fake = mixture(rng, 1000, centers, range(10)), mixture(rng, 1000, centers, range(10))
    precision, recall = im.precision_recall(real, fake)
    assert precision > 0.7 and recall > 0.7


def test_dropping_half_the_clusters_lowers_recall_and_coverage_not_precision(rng, centers):
    real = mixture(rng, 1000, centers, range(10))
    full, half = mixture(rng, 1000, centers, range(10)), mixture(rng, 1000, centers, range(5))
    # k=5: with k=3, k-NN precision of 16-d Gaussian clusters is ~0.79 even for the same distribution
    precision, recall = im.precision_recall(real, half, k=5)
    assert precision > 0.8 and recall < 0.65
    density, coverage = im.density_coverage(real, half)
    full_density, full_coverage = im.density_coverage(real, full)
    assert full_coverage > 0.9 and coverage < 0.65
    assert 0.8 < full_density < 1.2 and density > 0.8


def test_class_coverage_is_the_mean_of_each_classes_coverage_against_its_own_real_items(rng, centers):
    """Ten classes, one cluster each: fresh draws cover each class; one point per class covers only the balls
    around it; samples of the wrong class cover all of the real data mixed, and nothing of their label's."""
    labels = np.repeat(np.arange(10), 100)
    real = centers[labels] + rng.normal(size=(1000, D))
    healthy = centers[labels] + rng.normal(size=(1000, D))
    assert im.class_coverage(real, labels, healthy, labels) > 0.9
    one_each = real[labels * 100 + 7]                              # the 8th real item of each class, 100 times
    collapsed = im.class_coverage(real, labels, one_each, labels)
    assert collapsed < 0.1
    partly = np.where((labels < 5)[:, None], healthy, one_each)    # five classes healthy, five collapsed
    expected = np.mean([im.density_coverage(real[labels == c], partly[labels == c])[1] for c in range(10)])
    assert im.class_coverage(real, labels, partly, labels) == pytest.approx(expected)
    swapped = centers[(labels + 1) % 10] + rng.normal(size=(1000, D))  # label c draws class c + 1
    assert im.density_coverage(real, swapped)[1] > 0.9 and im.class_coverage(real, labels, swapped, labels) == 0
    with pytest.raises(ValueError, match="labels must match"):
        im.class_coverage(real, labels[:10], healthy, labels)
    few = labels != 3
    few[300:305] = True                                            # class 3 keeps 5 real rows
    with pytest.raises(ValueError, match="class 3 has 5 real rows"):
        im.class_coverage(real[few], labels[few], healthy, labels)


def test_junk_near_the_origin_is_not_precise(rng, centers):
    # Post-ReLU-like real features whose norm varies with brightness, and tiny junk features: on
    # raw features the junk sits inside the large k-NN balls of faint real images and scores
    # precision ~1.0 (docs/design.md, "Metric pitfalls"); L2 normalisation must prevent that.
    real = np.abs(mixture(rng, 1000, centers, range(10))) * rng.uniform(0, 1, size=(1000, 1))
    junk = 0.01 * np.abs(rng.normal(size=(1000, D)))
    assert im.precision_recall(real, junk)[0] < 0.05
    assert im.density_coverage(real, junk)[0] < 0.05


def test_manifold_metrics_are_scale_invariant(rng, centers):
    real, fake = mixture(rng, 300, centers, range(10)), mixture(rng, 300, centers, range(7))
    assert im.precision_recall(real, fake) == im.precision_recall(3 * real, 0.1 * fake)


def test_manifold_metrics_match_brute_force_across_chunks(rng, centers, monkeypatch):
    monkeypatch.setattr(im, "_CHUNK", 37)  # force many uneven chunks
    real, fake = mixture(rng, 200, centers, range(10)), mixture(rng, 150, centers, range(6))
    k = 3
    r = real / np.linalg.norm(real, axis=1, keepdims=True)
    f = fake / np.linalg.norm(fake, axis=1, keepdims=True)
    d_rr = np.linalg.norm(r[:, None] - r[None], axis=2)
    d_ff = np.linalg.norm(f[:, None] - f[None], axis=2)
    d_fr = np.linalg.norm(f[:, None] - r[None], axis=2)
    r_rad = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    f_rad = np.sort(d_ff, axis=1)[:, k]
    in_real_balls = d_fr <= r_rad[None]  # (fake, real)
    expected_pr = (in_real_balls.any(1).mean(), (d_fr <= f_rad[:, None]).any(0).mean())
    expected_dc = (in_real_balls.sum() / (k * len(f)), in_real_balls.any(0).mean())
    assert im.precision_recall(real, fake, k=k) == pytest.approx(expected_pr)
    assert im.density_coverage(real, fake, k=k) == pytest.approx(expected_dc)


def test_real_radii_from_one_pass_are_what_the_metrics_use(rng, centers, monkeypatch):
    """real_radii gives the k = 3 and k = 5 radii of the normalised real rows in one pass, the metrics given them
    answer as they do alone, and they use them (zero radii: no fake inside a real ball)."""
    monkeypatch.setattr(im, "_CHUNK", 37)
    real, fake = mixture(rng, 200, centers, range(10)), mixture(rng, 150, centers, range(6))
    radii = im.real_radii(real)
    unit = im._unit(torch.from_numpy(real))
    for k in (3, 5):
        assert torch.equal(radii[k], im._knn_radii(unit, k, "real"))
    assert im.precision_recall(real, fake, radii=radii) == im.precision_recall(real, fake)
    assert im.density_coverage(real, fake, radii=radii) == im.density_coverage(real, fake)
    assert im.precision_recall(real, fake, radii={3: 0 * radii[3]})[0] == 0.0
    assert im.density_coverage(real, fake, radii={5: 0 * radii[5]}) == (0.0, 0.0)
    with pytest.raises(ValueError, match="one per real row"):
        im.density_coverage(real[:-1], fake, radii=radii)


# ---- class entropy and conditional accuracy ----

def test_class_entropy_uniform_and_single_class():
    uniform = np.arange(1000) % 10
    assert im.class_entropy(uniform, 10) == pytest.approx(math.log(10))
    assert im.normalised_class_entropy(uniform, 10) == pytest.approx(1.0)
    single = np.full(1000, 3)
    assert im.class_entropy(single, 10) == 0.0 and im.normalised_class_entropy(single, 10) == 0.0
    two_of_four = torch.tensor([0, 1] * 50)
    assert im.normalised_class_entropy(two_of_four, 4) == pytest.approx(0.5)


def test_conditional_accuracy():
    requested = np.arange(100) % 10
    assert im.conditional_accuracy(requested, requested) == 1.0
    pred = requested.copy()
    pred[:25] = (pred[:25] + 1) % 10
    assert im.conditional_accuracy(torch.from_numpy(pred), requested) == pytest.approx(0.75)


# ---- memorisation ----

@pytest.fixture
def images(rng):
    """Image-like data in [-1, 1]: 600 training and 200 fresh 1x28x28 images around 10 prototypes."""
    prototypes = rng.uniform(-1, 1, size=(10, 1, 28, 28))
    def draw(n):
        return np.clip(prototypes[rng.integers(0, 10, n)] + 0.3 * rng.normal(size=(n, 1, 28, 28)), -1, 1)
    return draw(600), draw(200)


def test_memorisation_flags_copies_and_near_copies_only(rng, images):
    train, fresh = images
    nn = im.nearest_train_distances(train)
    assert nn.shape == (600,) and (nn > 0).all()
    copies = train[rng.permutation(600)[:200]]
    assert im.memorisation_fraction(copies, train, nn) == 1.0
    noisy = copies + 0.05 * rng.normal(size=copies.shape)
    assert im.memorisation_fraction(noisy, train, nn) == 1.0
    assert im.memorisation_fraction(fresh, train, nn) == 0.0
    half = np.concatenate([copies[:100], fresh[:100]])
    assert im.memorisation_fraction(torch.from_numpy(half).float(), train) == pytest.approx(0.5)


def test_memorisation_across_chunks(rng, images, monkeypatch):
    monkeypatch.setattr(im, "_CHUNK", 64)
    train, fresh = images
    samples = np.concatenate([train[:150], fresh[:150]])
    assert im.memorisation_fraction(samples, train) == pytest.approx(0.5)


def test_memorisation_takes_nn_distances_only_for_the_training_images_nearest_a_sample(rng, images, monkeypatch):
    """Without train_nn_dist, NN(t) is computed for the training images that are some sample's nearest only, with
    the answer the whole set's NN distances give: N samples against 54,000 training images cost N x 54,000
    distances twice, not 54,000 x 54,000."""
    monkeypatch.setattr(im, "_CHUNK", 7)
    train, fresh = images
    noise = np.linspace(0.0, 0.25, 120)[:, None, None, None]     # from copies to fresh-looking images
    near = train[rng.permutation(600)[:120]]
    samples = np.concatenate([near + noise * rng.normal(size=(120, 1, 28, 28)), fresh[:30]])
    expected = im.memorisation_fraction(samples, train, im.nearest_train_distances(train))
    assert 0.2 < expected < 0.8
    rows, real = [], im._cross_distances
    monkeypatch.setattr(im, "_cross_distances", lambda a, b: rows.append(len(a)) or real(a, b))
    assert im.memorisation_fraction(samples, train) == expected
    assert sum(rows) <= 2 * len(samples)
    one = train[:1]   # one training image: fine with its distance given, an error when it must be computed
    assert im.memorisation_fraction(one + 0.0, one, np.ones(1)) == 1.0
    with pytest.raises(ValueError, match="at least k \\+ 1 = 2 rows"):
        im.memorisation_fraction(one, one)


# ---- loud errors ----

@pytest.mark.parametrize("metric", [im.fid, im.kid, im.precision_recall, im.density_coverage])
def test_feature_dim_mismatch_is_an_error(rng, metric):
    with pytest.raises(ValueError, match="same number of features"):
        metric(rng.normal(size=(50, 8)), rng.normal(size=(50, 9)))


@pytest.mark.parametrize("metric", [im.precision_recall, im.density_coverage])
def test_too_few_points_for_k_is_an_error(rng, metric):
    with pytest.raises(ValueError, match="real_feats needs at least k \\+ 1 = 6 rows"):
        metric(rng.normal(size=(5, 8)), rng.normal(size=(50, 8)), k=5)


def test_bad_shapes_and_labels_are_errors(rng):
    with pytest.raises(ValueError, match=r"\(N samples, D features\)"):
        im.fid(rng.normal(size=(50,)), rng.normal(size=(50, 8)))
    with pytest.raises(ValueError, match="NaN"):
        im.fid(np.full((5, 2), np.nan), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="same number of features"):
        im.memorisation_fraction(rng.normal(size=(4, 1, 28, 28)), rng.normal(size=(4, 1, 32, 32)))
    with pytest.raises(ValueError, match="one distance per training image"):
        im.memorisation_fraction(rng.normal(size=(4, 10)), rng.normal(size=(6, 10)), np.ones(5))
    with pytest.raises(ValueError, match=r"\[0, num_classes = 10\)"):
        im.class_entropy(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="integer class ids"):
        im.conditional_accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="same length"):
        im.conditional_accuracy(np.array([0, 1]), np.array([0, 1, 2]))
