import numpy as np
import pytest
from matching_synth import textured

from geomatch.pipeline.patches import sample_patches


@pytest.fixture(scope="module")
def image():
    return textured((120, 140), seed=5)


@pytest.mark.parametrize("size", [64, 65, 8])
def test_identity_on_pixel_centres_is_a_plain_crop(image, size):
    rows, cols = np.array([40, 60, 77]), np.array([50, 70, 90])
    centres = np.column_stack([cols + 0.5, rows + 0.5])
    h = size // 2
    got = sample_patches(image, centres, size)
    assert got.shape == (3, size, size) and got.dtype == np.float32
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        np.testing.assert_array_equal(got[k], image[r - h:r - h + size, c - h:c - h + size])
    # The interpolating path (a map that is the identity only numerically) gives the same crop.
    near_identity = np.eye(2) + 1e-13
    np.testing.assert_allclose(sample_patches(image, centres, size, near_identity), got, atol=1e-5)


def test_subpixel_centres_interpolate_bilinearly():
    rows, cols = np.mgrid[0:50, 0:60]
    ramp = (0.3 * cols + 0.7 * rows).astype(np.float32)  # bilinear interpolation is exact on a plane
    got = sample_patches(ramp, [[30.25, 20.75]], 16)[0]
    k = np.arange(16) - 8
    want = 0.3 * (30.25 - 0.5 + k)[None, :] + 0.7 * (20.75 - 0.5 + k)[:, None]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_rotation_and_scale_map_the_grid(image):
    r, c, size = 60, 70, 33
    h = size // 2
    centre = [[c + 0.5, r + 0.5]]
    crop = image[r - h:r - h + size, c - h:c - h + size]
    rot90 = np.array([[0.0, -1.0], [1.0, 0.0]])  # patch (row v, col u) samples centre + (-v, u)
    got = sample_patches(image, centre, size, rot90)[0]
    rr, cc = np.mgrid[0:size, 0:size]
    np.testing.assert_allclose(got, crop[cc, 2 * h - rr], atol=1e-5)
    twice = sample_patches(image, centre, 16, 2 * np.eye(2))[0]
    np.testing.assert_allclose(twice, image[r - 16:r + 16:2, c - 16:c + 16:2], atol=1e-5)


def test_per_patch_maps_and_empty_and_outside(image):
    centres = np.array([[50.5, 40.5], [60.5, 50.5]])
    lin = np.stack([np.eye(2), 2 * np.eye(2)])
    got = sample_patches(image, centres, 8, lin)
    np.testing.assert_allclose(got[0], sample_patches(image, centres[:1], 8)[0], atol=1e-5)
    np.testing.assert_allclose(got[1], sample_patches(image, centres[1:], 8, 2 * np.eye(2))[0], atol=1e-5)
    assert sample_patches(image, np.empty((0, 2)), 8).shape == (0, 8, 8)
    outside = sample_patches(image, [[0.5, 0.5]], 8, fill=-1.0)[0]
    assert np.all(outside[:4, :] == -1.0) and np.all(outside[4:, 4:] == image[:4, :4])
    with pytest.raises(ValueError):
        sample_patches(image, centres, 8, np.eye(3))


def test_zoomed_patches_filter_then_sample_every_zoom_pixels():
    from scipy import ndimage as ndi

    from geomatch.pipeline.patches import antialias_sigma, sample_patches, sample_zoomed

    img = np.random.default_rng(0).random((200, 200)).astype(np.float32)
    c = np.array([[100.5, 100.5], [90.5, 110.5]])
    # Zoom 1 is the plain sampler, bit for bit.
    np.testing.assert_array_equal(sample_zoomed(img, c, 16, 1.0), sample_patches(img, c, 16))
    z = 3.0
    expected = sample_patches(ndi.gaussian_filter(img, antialias_sigma(z)), c, 16, np.eye(2) * z)
    np.testing.assert_allclose(sample_zoomed(img, c, 16, z), expected, atol=1e-6)
    # Per-centre zooms: each patch as if sampled alone.
    both = sample_zoomed(img, c, 16, [1.0, z], levels=2)
    np.testing.assert_array_equal(both[0], sample_patches(img, c[:1], 16)[0])
    np.testing.assert_allclose(both[1], expected[1], atol=1e-6)
    assert antialias_sigma(1.0) == 0.0 and antialias_sigma(0.5) == 0.0
