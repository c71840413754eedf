"""What SynthFACS draws around and over the face: background, hair, ears, neck, light, glasses, occluders,
camera nuisances. Each is a small function of the scene and a seeded generator, so renders stay pure."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .scene import SHIFT, Scene, to_fixed

AA = cv2.LINE_AA


def _c(col) -> tuple[float, float, float]:
    return tuple(float(x) for x in col)


def background(size: int, color, clutter: int, rng: np.random.Generator) -> np.ndarray:
    """A vertical colour gradient with ``clutter`` blurred shapes: a room behind a head."""
    base = np.asarray(color, np.float32)
    ramp = np.linspace(0.8, 1.15, size, dtype=np.float32)[:, None, None]
    img = np.clip(base[None, None, :] * ramp, 0, 255) * np.ones((size, size, 1), np.float32)
    img = img.astype(np.uint8)
    for _ in range(clutter):
        col = _c(rng.uniform(30, 230, 3))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.5, 2) * size
        if rng.random() < 0.5:
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), col, -1)
        else:
            cv2.ellipse(img, (int(x0), int(y0)), (int(w / 2), int(h / 2)), float(rng.uniform(0, 180)), 0, 360, col,
                        -1, AA)
    if clutter:
        img = cv2.GaussianBlur(img, (0, 0), size / 90)
    return img


def neck_and_shoulders(img, sc: Scene, skin, cloth):
    """Neck under the chin and the shoulders below it (turned with the head's yaw only a little)."""
    neck = [(-0.33, 0.55), (0.33, 0.55), (0.38, 1.5), (-0.38, 1.5)]
    pts = np.array([[sc.cx + sc.scale * u, sc.cy + sc.scale * v] for u, v in neck])
    shift = sc.rot[0, 2] * sc.scale * 0.25
    pts[:, 0] += shift
    cv2.fillPoly(img, [to_fixed(pts)], tuple(x * 0.8 for x in skin), AA, SHIFT)
    c = (int((sc.cx + shift * 0.5) * 16), int((sc.cy + sc.scale * 1.75) * 16))
    cv2.ellipse(img, c, (int(sc.scale * 1.5 * 16), int(sc.scale * 0.75 * 16)), 0, 180, 360, _c(cloth), -1, AA,
                SHIFT)


def ear(img, sc: Scene, side: int, skin):
    """One ear at the side of the head."""
    u = side * sc.half_width * 0.98
    pts = []
    for ang in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        pts.append((u + side * 0.07 * (1 + np.cos(ang)) * 0.8, 0.05 + 0.17 * np.sin(ang), -0.05))
    pix = sc.project(np.array(pts))
    cv2.fillPoly(img, [to_fixed(pix)], tuple(x * 0.9 for x in skin), AA, SHIFT)
    inner = sc.project(np.array(pts[4:12]) * np.array([1, 0.7, 1]) + np.array([side * -0.005, 0.015, 0]))
    cv2.polylines(img, [to_fixed(inner)], False, tuple(x * 0.65 for x in skin), 1, AA, SHIFT)


def ear_faces_viewer(sc: Scene, side: int) -> bool:
    """Whether the ear of this side is turned towards the camera (then it is drawn over the head)."""
    normal = np.array([side, 0.0, -0.1])
    return float((sc.rot @ normal)[2]) > 0.25


def long_hair(img, sc: Scene, color):
    """Hair falling behind the head and onto the shoulders."""
    pts = []
    for ang in np.linspace(np.pi * 0.9, np.pi * 2.1, 24):
        pts.append((np.cos(ang) * sc.half_width * 1.18, np.sin(ang) * 1.1 - 0.05, -0.3))
    pts += [(sc.half_width * 1.25, 0.6, -0.4), (sc.half_width * 1.1, 1.25, -0.4),
            (-sc.half_width * 1.1, 1.25, -0.4), (-sc.half_width * 1.25, 0.6, -0.4)]
    pix = sc.project(np.array(pts))
    hull = cv2.convexHull(pix.astype(np.float32))
    cv2.fillPoly(img, [to_fixed(hull.reshape(-1, 2))], _c(color), AA, SHIFT)


def shading(sc: Scene, light, ambient: float, hit: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambertian light on the head (ambient + diffuse), 1 outside the head."""
    light = np.asarray(light, np.float64)
    light /= np.linalg.norm(light)
    diffuse = np.clip(normals @ light, 0, None)
    shade = ambient + (1.05 - ambient) * diffuse
    out = np.where(hit, shade, 1.0).astype(np.float32)
    return cv2.GaussianBlur(out, (3, 3), 0)


def hair_alpha(sc: Scene, hairline: float, style: int, hit: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-pixel hair coverage of the head from the ray-cast head points (front hairline and back of head)."""
    u, v, z = points[..., 0] / sc.half_width, points[..., 1], points[..., 2]
    if style == 2:  # shaved: a thin cap only
        line = hairline - 0.1 + 0.05 * u**2
    elif style == 3:  # side part: the hairline dips on one side
        line = hairline + 0.25 * u**2 + 0.08 * np.clip(u, 0, None)
    else:
        line = hairline + 0.3 * u**2
    front = v < line
    # behind the temples and ears the hair boundary runs diagonally down and back, lower for long hair
    drop = 0.55 if style == 1 else 0.0
    back = z < 0.35 - 1.1 * np.clip(v + 0.35 - drop, 0.0, None) - (0.3 if style == 2 else 0.0)
    alpha = (hit & (front | (back & (v < 0.45 + drop)))).astype(np.float32)
    return cv2.GaussianBlur(alpha, (3, 3), 0.8)


def glasses(img, sc: Scene, eye_x: float, eye_y: float, eye_w: float, color=(40, 40, 45), tinted=False):
    """Plain glasses (identity) or sunglasses (occluder: ``tinted``). Returns the covered-pixel mask."""
    mask = np.zeros(img.shape[:2], np.uint8)
    hw, top, bot = eye_w * 0.72, (0.16 if tinted else 0.10), (0.12 if tinted else 0.09)
    lenses = []
    for side in (-1, 1):
        if sc.facing(side * eye_x, eye_y)[0] < 0.05:
            lenses.append(None)
            continue
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        uu = side * eye_x + hw * np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** 0.6
        vv = eye_y - 0.01 + np.where(np.sin(ang) < 0, top, bot) * np.sign(np.sin(ang)) * np.abs(np.sin(ang)) ** 0.6
        pix = sc.px(uu, vv, 0.09)
        lenses.append(pix)
        if tinted:
            cv2.fillPoly(img, [to_fixed(pix)], (20, 20, 24), AA, SHIFT)
            cv2.fillPoly(mask, [to_fixed(pix)], 1, cv2.LINE_8, SHIFT)
        cv2.polylines(img, [to_fixed(pix)], True, color, max(1, round(sc.scale / 45)), AA, SHIFT)
    bridge = sc.px(np.array([-eye_x + hw, 0, eye_x - hw]), np.array([eye_y - 0.02, eye_y - 0.05, eye_y - 0.02]),
                   0.1)
    cv2.polylines(img, [to_fixed(bridge)], False, color, max(1, round(sc.scale / 45)), AA, SHIFT)
    for side in (-1, 1):
        if lenses[(side + 1) // 2] is None:
            continue
        temple = sc.project(np.array([[side * (eye_x + hw), eye_y - 0.05, 0.55],
                                      [side * sc.half_width, eye_y - 0.02, 0.0]]))
        if ((sc.rot @ np.array([side, 0, 0]))[2]) > -0.2:
            cv2.polylines(img, [to_fixed(temple)], False, color, max(1, round(sc.scale / 45)), AA, SHIFT)
    return mask


def occluder(img, sc: Scene, kind: str, ident, rng: np.random.Generator) -> np.ndarray:
    """Draw an occluder; returns the uint8 mask (H, W) of the pixels it covers."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    if kind == "none":
        return mask
    if kind == "sunglasses":
        return glasses(img, sc, ident.eye_x, ident.eye_y, ident.eye_w * 1.1, (15, 15, 15), tinted=True)
    polys = []
    if kind == "mask":
        col = _c([(235, 238, 240), (120, 170, 215), (30, 30, 35), (150, 190, 170)][rng.integers(4)])
        top = ident.eye_y + ident.nose_len * 0.55
        uu = np.linspace(-ident.half_width * 0.95, ident.half_width * 0.95, 13)
        upper = sc.px(uu, top + 0.06 * (uu / ident.half_width) ** 2, 0.03)
        vv = np.linspace(top + 0.1, 1.0, 8)
        right = sc.px(sc.width_at(vv) * 0.97, vv, 0.02)
        chin = sc.px(np.linspace(0.3, -0.3, 5), np.full(5, 1.02), 0.02)
        left = sc.px(-sc.width_at(vv[::-1]) * 0.97, vv[::-1], 0.02)
        polys.append((np.concatenate([upper, right, chin, left]), col))
    elif kind == "hand":
        skin = _c(np.clip(np.asarray(ident.skin) * rng.uniform(0.85, 1.1), 0, 255))
        cu, cv_ = rng.uniform(-0.45, 0.45), rng.uniform(0.0, 0.75)
        ang = rng.uniform(-0.8, 0.8) + (np.pi if rng.random() < 0.3 else 0.0)
        s = rng.uniform(0.32, 0.45)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        palm = np.array([[np.cos(a) * 0.55, np.sin(a) * 0.6 + 0.55] for a in np.linspace(0, 2 * np.pi, 16)])
        pieces = [palm]
        for k, dx in enumerate((-0.42, -0.14, 0.14, 0.42)):
            ln = (0.85, 1.0, 0.95, 0.75)[k]
            pieces.append(np.array([[dx - 0.12, 0.3], [dx + 0.12, 0.3], [dx + 0.11, -ln + 0.3], [dx, -ln + 0.22],
                                    [dx - 0.11, -ln + 0.3]]))
        for piece in pieces:
            q = (piece * s) @ rot.T + np.array([cu, cv_])
            polys.append((sc.px(q[:, 0], q[:, 1], 0.2), skin))
    elif kind == "hat":
        col = _c(rng.uniform(20, 200, 3))
        brim = ident.eye_y - ident.eye_h - ident.brow_gap - rng.uniform(-0.02, 0.08)
        uu = np.linspace(-ident.half_width * 1.25, ident.half_width * 1.25, 13)
        front = sc.px(uu, np.full_like(uu, brim), 0.2)
        top = sc.project(np.array([[ident.half_width * 1.1, -1.3, 0.0], [-ident.half_width * 1.1, -1.3, 0.0]]))
        polys.append((np.concatenate([front, top]), col))
    elif kind == "fringe":
        col = _c(ident.hair)
        bottom = ident.eye_y - ident.eye_h * rng.uniform(0.0, 1.5)
        uu = np.linspace(-ident.half_width, ident.half_width, 17)
        vv = bottom + 0.05 * np.sin(uu * 40) + 0.06 * rng.random(uu.size)
        edge = sc.px(uu, vv, 0.08)
        top = sc.project(np.array([[ident.half_width * 1.05, -1.1, 0.0], [-ident.half_width * 1.05, -1.1, 0.0]]))
        polys.append((np.concatenate([edge, top]), col))
    elif kind == "block":
        col = _c(rng.uniform(0, 255, 3))
        w, h = rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.6)
        cu, cv_ = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.6)
        q = np.array([[cu - w / 2, cv_ - h / 2], [cu + w / 2, cv_ - h / 2], [cu + w / 2, cv_ + h / 2],
                      [cu - w / 2, cv_ + h / 2]])
        polys.append((np.array([[sc.cx + sc.scale * x, sc.cy + sc.scale * y] for x, y in q]), col))
    else:
        raise ValueError(f"unknown occluder {kind!r}")
    for pix, col in polys:
        cv2.fillPoly(img, [to_fixed(pix)], col, AA, SHIFT)
        cv2.fillPoly(mask, [to_fixed(pix)], 1, cv2.LINE_8, SHIFT)
    if kind == "hand":  # finger edges
        for pix, _ in polys[1:]:
            cv2.polylines(img, [to_fixed(pix)], True, tuple(x * 0.7 for x in polys[0][1]), 1, AA, SHIFT)
    return mask


@functools.lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    return xs, ys


def camera(img: np.ndarray, nz, rng: np.random.Generator) -> np.ndarray:
    """Light gradient, blur, sensor noise and JPEG artefacts."""
    out = img.astype(np.float32)
    if nz.gradient[1] > 0:
        xs, ys = _unit_grid(img.shape[0])
        ramp = 1 + nz.gradient[1] * (np.cos(nz.gradient[0]) * xs + np.sin(nz.gradient[0]) * ys) * 2
        out *= ramp[..., None]
    if nz.blur * img.shape[0] / 112 > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), nz.blur * img.shape[0] / 112)  # blur is given at 112 px
    if nz.noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(nz.noise)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if nz.jpeg:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(nz.jpeg)])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return out
