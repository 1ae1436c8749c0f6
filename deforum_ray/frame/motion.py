"""Motion of a latent about the frame centre: one sampling grid and ``grid_sample``.

Deforum's 2D convention (cv2.getRotationMatrix2D then a translation): zoom > 1 zooms in, angle
in degrees > 0 turns the picture counter-clockwise, translation_x/y in output pixels > 0 moves
the content right/down. The forward map ``dst = M @ src`` is built in centred *pixel* units, so
rotation is a true rotation on non-square frames (no shear), per-frame matrices compose by
multiplication, and translations are exact at any sub-pixel size (never rounded to cells).

Deforum's 3D mode moves a camera instead (:func:`camera_matrix`). With ``depth: none`` the picture
is a plane facing the camera, so the move is a homography: a 3x3 map like the 2D ones, composed
the same way, that :func:`warp` samples through a perspective grid. With a depth model each latent
cell has its own distance and the move is a rigid one of the camera (:func:`rigid_move`, 4x4,
composed the same way) that :func:`warp_depth` reprojects cell by cell.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..job.choices import PADDINGS, WARP_INTERPOLATIONS


def motion_matrix(zoom: float, angle: float, translation_x: float, translation_y: float) -> np.ndarray:
    """3x3 forward map in centred pixel coordinates (x right, y down): ``dst = M @ src``."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array(
        [[zoom * c, zoom * s, translation_x],
         [-zoom * s, zoom * c, translation_y],
         [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


TRANSLATION_SCALE = 1.0 / 200.0  # Deforum's (from Disco Diffusion): a unit moves 1/200 of the plane's distance
Vector3 = tuple[float, float, float]  # x, y, z


def euler_xyz(x: float, y: float, z: float) -> np.ndarray:
    """Rotation by Euler angles (radians) about x, then y, then z, as pytorch3d's
    ``euler_angles_to_matrix(..., "XYZ")`` that Deforum uses: ``Rx @ Ry @ Rz``."""
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=np.float64)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=np.float64)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=np.float64)
    return rx @ ry @ rz


def camera_matrix(translation: Vector3, rotation: Vector3, fov: float, height: int) -> np.ndarray:
    """3x3 forward map (centred pixels, x right, y down) of one frame's camera move, the picture
    being a plane facing the camera at distance 1 (``depth: none``): a homography.

    Units and signs are Deforum's ``anim_frame_warp_3d``: the camera moves by
    ``(-x, y, -z) * TRANSLATION_SCALE`` and turns by the Euler XYZ rotation R of ``rotation``
    (degrees), a point X of the plane going to ``R^T X + T`` (pytorch3d's ``X @ R + T``). So
    translation_x > 0 moves the content left, translation_y > 0 down, translation_z > 0 nearer
    (a zoom in), rotation_3d_z > 0 turns it counter-clockwise as ``angle`` does. A pinhole of
    vertical field of view ``fov`` (degrees) over ``height`` pixels sees it: with K its intrinsics,
    ``H = K (R^T + T e_z^T) K^-1``. Deforum instead subtracts each pixel's displacement, measured in
    projected units, from the grid: the same to first order for x/y moves, 1/tan(fov/2) times
    faster for z moves (README, 3D motion)."""
    r_t, t = camera_move(translation, rotation)
    focal = height / 2.0 / math.tan(math.radians(fov) / 2.0)
    k, k_inv = np.diag([focal, focal, 1.0]), np.diag([1.0 / focal, 1.0 / focal, 1.0])
    h = k @ (r_t + np.outer(t, [0.0, 0.0, 1.0])) @ k_inv
    return h / h[2, 2]


def camera_move(translation: Vector3, rotation: Vector3) -> tuple[np.ndarray, np.ndarray]:
    """(R^T, T) of one frame's camera move in Deforum's units: a point X seen before the move is
    at ``R^T X + T`` after it (see :func:`camera_matrix`)."""
    t = np.array([-translation[0], translation[1], -translation[2]], dtype=np.float64) * TRANSLATION_SCALE
    return euler_xyz(*(math.radians(a) for a in rotation)).T, t


def rigid_move(translation: Vector3, rotation: Vector3) -> np.ndarray:
    """4x4 map of camera coordinates (homogeneous) of one frame's move: ``[[R^T, T], [0, 1]]``.
    Moves over several frames are their product (:func:`compose`), the inverse undoes one."""
    r_t, t = camera_move(translation, rotation)
    out = np.eye(4, dtype=np.float64)
    out[:3, :3], out[:3, 3] = r_t, t
    return out


def depth_grid(depth: Tensor, move: np.ndarray, fov: float, height: int, vae_scale: int = 8,
               iterations: int = 6) -> Tensor:
    """``grid_sample`` grid (1, h, w, 2, float64) of a rigid camera ``move`` (4x4, :func:`rigid_move`)
    over a scene with a depth per latent cell of the frame moved from (``depth``: (h, w), distance
    along the view axis; the plane of ``depth: none`` is 1).

    A cell p of the earlier frame, at depth d(p), is the point X = d K^-1 p; after the move it is
    seen at q = f(p) = K (R^T X + T) projected. An output cell q samples the earlier frame at the p
    with f(p) = q, found by fixed-point steps p <- p + (q - f(p)) from p = q (the first step is
    Deforum's: the displacement at q, subtracted); with one depth everywhere this is the inverse
    homography of :func:`camera_matrix`."""
    h, w = depth.shape
    device = depth.device
    move_t = torch.from_numpy(np.asarray(move, dtype=np.float64)).to(device)
    r_t, t = move_t[:3, :3], move_t[:3, 3]
    focal = height / 2.0 / math.tan(math.radians(fov) / 2.0) / vae_scale  # in latent cells
    qx, qy = cell_centres(h, w, device)
    d = depth.to(torch.float64)[None, None]

    def moved(px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
        dp = F.grid_sample(d, normalised(px, py), mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        points = torch.stack([px / focal * dp, py / focal * dp, dp])  # (3, h, w)
        seen = torch.einsum("ij,jhw->ihw", r_t, points) + t[:, None, None]
        z = seen[2].clamp_min(1e-9)
        return focal * seen[0] / z, focal * seen[1] / z

    px, py = qx, qy
    for _ in range(iterations):
        fx, fy = moved(px, py)
        px, py = px + (qx - fx), py + (qy - fy)
    return normalised(px, py)


def cell_centres(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(x, y) of every latent cell's centre, in cells from the frame centre (float64, (h, w) each)."""
    ys = torch.arange(height, dtype=torch.float64, device=device) + 0.5 - height / 2.0
    xs = torch.arange(width, dtype=torch.float64, device=device) + 0.5 - width / 2.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy


def normalised(x: Tensor, y: Tensor) -> Tensor:
    """``grid_sample`` grid (1, h, w, 2) of points given in cells from the centre of an (h, w) frame."""
    h, w = x.shape
    return torch.stack([x / (w / 2.0), y / (h / 2.0)], dim=-1)[None]


def perspective_grid(matrix: np.ndarray, height: int, width: int, vae_scale: int, device: torch.device) -> Tensor:
    """``grid_sample`` grid (1, h, w, 2, float64) of a homography: each output cell samples the input
    at the inverse map of its centre, in normalised coordinates (align_corners=False). Cells whose
    source lies behind the camera sample far outside the frame, which the padding fills."""
    cells = np.diag([1.0 / vae_scale, 1.0 / vae_scale, 1.0]) @ matrix @ np.diag([vae_scale, vae_scale, 1.0])
    inverse = torch.from_numpy(np.linalg.inv(cells)).to(device)
    xx, yy = cell_centres(height, width, device)
    source = inverse @ torch.stack([xx.flatten(), yy.flatten(), torch.ones_like(xx).flatten()])
    w = source[2]
    ahead = w > 1e-9
    far = torch.full_like(w, 4.0 * max(height, width))  # well outside the frame
    x = torch.where(ahead, source[0] / torch.where(ahead, w, 1.0), far).reshape(height, width)
    y = torch.where(ahead, source[1] / torch.where(ahead, w, 1.0), far).reshape(height, width)
    return normalised(x, y)


def grid_theta(matrix: np.ndarray, height: int, width: int, vae_scale: int = 8) -> Tensor:
    """``affine_grid`` theta (2x3, float64) for a ``height x width``-cell latent: for each output
    location, where to sample the input, in normalised coordinates (align_corners=False)."""
    inverse = np.linalg.inv(matrix)
    a_inv, t = inverse[:2, :2], matrix[:2, 2] / vae_scale  # translation in latent cells
    half = np.diag([width / 2.0, height / 2.0])  # normalised -> centred cell units
    half_inv = np.diag([2.0 / width, 2.0 / height])
    linear = half_inv @ a_inv @ half
    offset = -half_inv @ a_inv @ t
    return torch.from_numpy(np.concatenate([linear, offset[:, None]], axis=1))


def warp(z: Tensor, matrix: np.ndarray, interpolation: str = "bicubic", padding: str = "reflection",
         vae_scale: int = 8) -> Tensor:
    """Warp ``(B, C, H, W)`` latents by a forward motion matrix (the same for every item): an
    affine map, or a homography (3D moves)."""
    b, c, h, w = z.shape
    if matrix[2, 0] == 0 and matrix[2, 1] == 0:  # affine (every 2D move; 3D ones along the view axis)
        theta = grid_theta(matrix / matrix[2, 2], h, w, vae_scale).to(device=z.device, dtype=torch.float64)
        grid = F.affine_grid(theta.expand(b, 2, 3), [b, c, h, w], align_corners=False)
    else:
        grid = perspective_grid(matrix, h, w, vae_scale, z.device).expand(b, h, w, 2)
    return sample(z, grid, interpolation, padding)


def warp_depth(z: Tensor, move: np.ndarray, depth: Tensor, fov: float, height: int, interpolation: str = "bicubic",
               padding: str = "reflection", vae_scale: int = 8) -> Tensor:
    """Warp ``(B, C, h, w)`` latents by a rigid camera ``move`` (4x4) over ``depth`` ((h, w), the
    distance of each cell of the frame moved from): :func:`depth_grid`, sampled as :func:`warp` does."""
    b, _, h, w = z.shape
    grid = depth_grid(depth.to(z.device), move, fov, height, vae_scale)
    return sample(z, grid.expand(b, h, w, 2), interpolation, padding)


def sample(z: Tensor, grid: Tensor, interpolation: str, padding: str) -> Tensor:
    """``grid_sample`` of latents at a float64 grid (align_corners=False), in the latents' dtype."""
    if interpolation not in WARP_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {WARP_INTERPOLATIONS}, got {interpolation!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    # Sample in float64 whatever the model dtype: float32 pixel coordinates near 128 cells are only
    # good to ~1e-5 of a cell, and a latent is small enough that float64 costs nothing noticeable.
    out = F.grid_sample(z.double(), grid, mode=interpolation, padding_mode=padding, align_corners=False)
    return out.to(z.dtype)


def compose(matrices: Iterable[np.ndarray], size: int = 3) -> np.ndarray:
    """The one forward map equal to applying ``matrices`` (``size`` x ``size``: 3 for image maps,
    4 for rigid camera moves) in order, the first one first.

    Motion accumulated over many frames is this product of the per-frame maps, exactly: zoom,
    rotation and translation do not commute, so summing schedule values would be wrong."""
    out = np.eye(size, dtype=np.float64)
    for matrix in matrices:
        out = np.asarray(matrix, dtype=np.float64) @ out
    return out
