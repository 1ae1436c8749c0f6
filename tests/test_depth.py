"""The depth model for 3D motion: a tiny random Depth Anything built here, saved to a folder and
loaded back through the code that loads real weights (never downloaded), and its map reduced to
distances on the latent grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deforum_ray.model.depth import FARTHEST, NEAREST, DepthModel, DepthModelError, disparity_to_distance


def tiny_depth_anything(seed: int = 0):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, fusion_hidden_size=16,
                                 neck_hidden_sizes=[8, 16, 32, 32], reassemble_factors=[4, 2, 1, 0.5],
                                 head_hidden_size=8, patch_size=14)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DepthAnythingForDepthEstimation(config).eval()


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-depth")
    tiny_depth_anything().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], '
                                                     '"size": {"height": 56, "width": 56}}')
    return folder


def frame(height: int = 64, width: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def test_a_depth_model_loads_from_a_folder_and_gives_distances_on_the_latent_grid(depth_folder):
    depth = DepthModel.load(str(depth_folder))
    assert (depth.size, depth.patch, depth.mean) == (56, 14, (0.5, 0.5, 0.5))  # its preprocessor config is read
    rgb = frame()
    x = depth.pixel_values(rgb)
    assert x.shape == (1, 3, 56, 84)  # the shorter side at size, each side a multiple of the patch
    distances = depth.latent_depth(rgb, (8, 12))
    assert distances.shape == (8, 12) and distances.dtype == torch.float32
    assert float(distances.min()) == NEAREST and float(distances.max()) == FARTHEST
    # The closed form: the model's own map, averaged over each cell, scaled to [1, 2] nearest first.
    with torch.no_grad():
        predicted = tiny_depth_anything()(pixel_values=x).predicted_depth
    pooled = F.adaptive_avg_pool2d(predicted[None], (8, 12))[0, 0]
    expected = 1 + (pooled.max() - pooled) / (pooled.max() - pooled.min())
    torch.testing.assert_close(distances, expected, rtol=0, atol=1e-5)
    assert torch.equal(depth.latent_depth(rgb, (8, 12)), distances)  # the same frame, the same bits


def test_flat_or_broken_maps_are_the_plane_and_missing_weights_are_one_line(tmp_path):
    assert torch.equal(disparity_to_distance(torch.full((4, 4), 3.0)), torch.full((4, 4), NEAREST))
    assert torch.equal(disparity_to_distance(torch.tensor([[float("nan"), 1.0]])), torch.full((1, 2), NEAREST))
    ramp = disparity_to_distance(torch.tensor([[4.0, 3.0, 2.0]]))
    torch.testing.assert_close(ramp, torch.tensor([[1.0, 1.5, 2.0]]))
    with pytest.raises(DepthModelError, match=r"^motion\.depth: cannot load depth model 'nobody/no-such-depth'.*"
                                              r"run deforum-ray fetch-model nobody/no-such-depth$"):
        DepthModel.load("nobody/no-such-depth")
    with pytest.raises(DepthModelError, match="cannot load depth model"):
        DepthModel.load(str(tmp_path))  # a folder without a model
