"""The 3-D head of SynthFACS: an ellipsoid with a narrowed jaw, rotated by yaw, pitch and roll, projected.

Face-plane coordinates ``(u, v)``: u to the viewer's right, v down, the head centre at the origin, the head's
half height 1. A point of the face surface lies at depth ``z(u, v)`` on the ellipsoid (z towards the viewer);
features that stand out (the nose) add depth. Projection is orthographic after rotation, which is what an
aligned face crop looks like; at large yaw the far half of the face foreshortens and faces away.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
ONE = 1 << SHIFT


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix (degrees): yaw about the vertical axis, pitch about the horizontal, then roll."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass
class Scene:
    """Camera and head of one rendering: maps face-plane points to pixels and tells what faces the viewer."""

    size: int
    cx: float
    cy: float
    scale: float  # pixels per head unit
    rot: np.ndarray
    half_width: float  # ellipsoid semi-axes (a, 1, c)
    depth: float
    jaw: float  # narrowing of the lower face
    jaw_drop: float = 0.0  # AU 26 opens the jaw: lower face moves down

    def width_at(self, v):
        """Half width of the head at height v (narrower towards the chin)."""
        vp = np.maximum(v, 0.0)
        return self.half_width * (1.0 - self.jaw * vp * vp)

    def surface(self, u, v, dz=0.0) -> np.ndarray:
        """3-D points (N, 3) on the front of the head for face-plane points, ``dz`` added to the depth."""
        u = np.asarray(u, dtype=np.float64).ravel()
        v = np.asarray(v, dtype=np.float64).ravel()
        if u.size != v.size:
            u, v = np.broadcast_arrays(u, v)
        a = self.width_at(v)
        inside = np.maximum(1.0 - (u / a) ** 2 - v * v, 0.0)
        out = np.empty((u.size, 3))
        out[:, 0] = u
        out[:, 1] = v + self.jaw_drop * np.maximum((v - 0.45) / 0.55, 0.0) if self.jaw_drop else v
        out[:, 2] = self.depth * np.sqrt(inside) + dz
        return out

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) of 3-D head points."""
        cam = pts @ self.rot[:2].T
        cam *= self.scale
        cam[:, 0] += self.cx
        cam[:, 1] += self.cy
        return cam

    def px(self, u, v, dz=0.0) -> np.ndarray:
        """Pixel coordinates of face-plane points on the surface."""
        return self.project(self.surface(u, v, dz))

    def facing(self, u, v) -> np.ndarray:
        """How much the surface at (u, v) faces the viewer: the camera-space z of its normal (-1..1)."""
        u = np.asarray(u, dtype=np.float64).ravel()
        v = np.asarray(v, dtype=np.float64).ravel()
        if u.size != v.size:
            u, v = np.broadcast_arrays(u, v)
        a = self.width_at(v)
        z = self.depth * np.sqrt(np.maximum(1.0 - (u / a) ** 2 - v * v, 0.0))
        n = np.stack([u / a**2, v, z / self.depth**2], axis=1)
        return (n @ self.rot[2]) / (np.sqrt((n * n).sum(1)) + 1e-9)

    def outline(self, n: int = 72) -> np.ndarray:
        """Pixel polygon of the head's silhouette (convex hull of the projected surface)."""
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        ph = np.linspace(0.05, np.pi - 0.05, 12)
        t, p = np.meshgrid(th, ph)
        v = np.cos(p).ravel()
        a = self.width_at(v)
        u = (a * np.sin(p).ravel() * np.cos(t.ravel()))
        z = self.depth * np.sin(p).ravel() * np.sin(t.ravel())
        v_drop = v + self.jaw_drop * np.clip((v - 0.45) / 0.55, 0.0, None)
        pix = self.project(np.stack([u, v_drop, z], axis=1))
        return cv2.convexHull(pix.astype(np.float32)).reshape(-1, 2)

    def raycast(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel hit of the head ellipsoid (without the jaw narrowing).

        Returns:
            hit mask (H, W) bool, head-space points (H, W, 3) and camera-space normals (H, W, 3).
        """
        xs, ys = _grid(self.size)
        inv = self.rot.T.astype(np.float32)  # camera -> head
        cx = (xs - np.float32(self.cx)) / np.float32(self.scale)
        cy = (ys - np.float32(self.cy)) / np.float32(self.scale)
        o = cx[..., None] * inv[:, 0] + cy[..., None] * inv[:, 1]
        d = inv[:, 2]
        inv_axes2 = (1.0 / np.array([self.half_width**2, 1.0, self.depth**2])).astype(np.float32)
        qa = float((d * d * inv_axes2).sum())
        qb = 2 * (o @ (d * inv_axes2))
        qc = (o * o) @ inv_axes2 - 1.0
        disc = qb * qb - 4 * qa * qc
        hit = disc > 0
        t = (-qb + np.sqrt(np.maximum(disc, 0))) / (2 * qa)
        p = o + t[..., None] * d
        n = (p * inv_axes2) @ self.rot.T.astype(np.float32)
        n /= np.sqrt((n * n).sum(-1, keepdims=True)) + 1e-9
        return hit, p, n


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def to_fixed(pts: np.ndarray) -> np.ndarray:
    """Pixel points to cv2's fixed-point int32 (for sub-pixel anti-aliased drawing with ``shift=SHIFT``)."""
    return np.round(np.asarray(pts) * ONE).astype(np.int32).reshape(-1, 1, 2)
