"""Rendering of one SynthFACS face from identity, action units, pose, occluder and nuisances.

Pure function of a :class:`FaceSpec`: the same spec always gives the same pixels. The face is drawn twice,
once at rest (all AUs zero) and once with the expression, on the same subject, pose, light and occluder;
where the two differ (slightly dilated, minus occluded pixels) is the ground-truth relevance mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .aus import AU_INDEX
from .scene import SHIFT, Scene, rotation, to_fixed

OCCLUDERS: tuple[str, ...] = ("none", "sunglasses", "mask", "hand", "hat", "fringe", "block")
AA = cv2.LINE_AA
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


@dataclass
class Identity:
    """A subject: face geometry, colours, hair and glasses, and the resting face (AU bias)."""

    half_width: float
    jaw: float
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_thick: float
    brow_arch: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    hairline: float
    hair_style: int  # 0 short, 1 long, 2 shaved, 3 side part
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lip: tuple[float, float, float]
    cloth: tuple[float, float, float]
    glasses: bool
    folds: float  # baseline depth of nasolabial folds (age)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(len(AU_INDEX), np.float32))


@dataclass
class Nuisance:
    """Everything that changes the picture but not the face: light, background, camera."""

    light: tuple[float, float, float] = (0.3, -0.4, 1.0)
    ambient: float = 0.55
    gradient: tuple[float, float] = (0.0, 0.0)  # (angle rad, strength)
    background: tuple[float, float, float] = (120.0, 120.0, 120.0)
    clutter: int = 0
    noise: float = 0.0
    blur: float = 0.0
    jpeg: int = 0  # 0 = no JPEG round trip
    dx: float = 0.0
    dy: float = 0.0
    zoom: float = 1.0
    seed: int = 0


@dataclass
class FaceSpec:
    """All that defines one image."""

    identity: Identity
    au: np.ndarray
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    occluder: str = "none"
    occluder_seed: int = 0
    unilateral_side: int = 1  # side (+1 viewer's right, -1 left) of U12/U14
    nuisance: Nuisance = field(default_factory=Nuisance)


def _mix(c1, c2, t: float) -> tuple[float, float, float]:
    t = min(1.0, max(0.0, float(t)))
    return (c1[0] * (1 - t) + c2[0] * t, c1[1] * (1 - t) + c2[1] * t, c1[2] * (1 - t) + c2[2] * t)


def _scale(c, k: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, x * k)) for x in c)


def _poly(img, pts, color, closed=True):
    if closed:
        cv2.fillPoly(img, [to_fixed(pts)], color, AA, SHIFT)
    else:
        cv2.polylines(img, [to_fixed(pts)], False, color, 1, AA, SHIFT)


def _line(img, pts, color, thickness: int = 1):
    cv2.polylines(img, [to_fixed(pts)], False, color, max(1, int(thickness)), AA, SHIFT)


class _Face:
    """Draws the AU-dependent face of one spec on a canvas."""

    def __init__(self, spec: FaceSpec, au: np.ndarray, scene: Scene):
        self.s, self.au, self.sc, self.id = spec, au, scene, spec.identity
        self.px_per_unit = scene.scale
        self.dark = _scale(self.id.skin, 0.45)
        # how much the left, centre and right of the face turn to the viewer, at eye and mouth height
        grid_u = np.array([-0.5, -0.25, 0.0, 0.25, 0.5] * 2)
        grid_v = np.repeat([spec.identity.eye_y, spec.identity.mouth_y], 5)
        self._vis = scene.facing(grid_u, grid_v).reshape(2, 5)

    def visible(self, u: float, v: float) -> float:
        """Approximate facing of the surface at (u, v) from a few precomputed points (cheap)."""
        row = self._vis[0] if v < 0.25 else self._vis[1]
        return float(np.interp(u, (-0.5, -0.25, 0.0, 0.25, 0.5), row))

    def a(self, name: str) -> float:
        return float(self.au[AU_INDEX[name]])

    def side_a(self, name: str, side: int) -> float:
        """Intensity of a (possibly one-sided) AU on one side of the face."""
        val = self.a(name)
        if "U" + name in AU_INDEX and side == self.s.unilateral_side:
            val = max(val, self.a("U" + name))
        return val

    def crease(self, img, u, v, strength: float, width: float = 1.0):
        """A skin line (wrinkle, fold) whose darkness follows ``strength``; hidden where the face turns away."""
        if strength <= 0.03:
            return
        u, v = np.asarray(u, float), np.asarray(v, float)
        if self.visible(float(u.mean()), float(v.mean())) < 0.15:
            return
        color = _mix(self.id.skin, self.dark, min(1.0, strength) * 0.75)
        _line(img, self.sc.px(u, v), color, round(width * self.px_per_unit / 55))

    def head(self, img):
        _poly(img, self.sc.outline(), self.id.skin)

    def brows(self, img):
        i = self.id
        t = np.linspace(0, 1, 9)
        for side in (-1, 1):
            a1, a2, a4 = self.a("1"), self.a("2"), self.a("4")
            inner_x = i.eye_x - i.eye_w * 0.55 - 0.05 * a4
            outer_x = i.eye_x + i.eye_w * 0.62
            x = inner_x + (outer_x - inner_x) * t
            base = i.eye_y - i.eye_h - i.brow_gap
            y = base - i.brow_arch * np.sin(np.pi * (0.15 + 0.8 * t))
            y = y - 0.10 * a1 * (1 - t) ** 1.5 - 0.085 * a2 * t**1.2 + 0.06 * a4 + 0.035 * a4 * (1 - t)
            y = y + 0.03 * a1 * a4 * (1 - t)  # sad brows: oblique
            th = i.brow_thick * (1.0 - 0.55 * t) * (1 + 0.2 * a4)
            top = self.sc.px(side * x, y - th / 2)
            bot = self.sc.px(side * x, y + th / 2)
            if self.visible(side * float(x.mean()), float(y.mean())) < 0.05:
                continue
            _poly(img, np.concatenate([top, bot[::-1]]), _mix(self.id.hair, self.id.skin, 0.25))
        if a4 > 0.05:  # vertical furrows between the brows
            for side in (-1, 1):
                uu = np.full(4, side * 0.045)
                vv = np.linspace(base - 0.02, base + 0.09, 4)
                self.crease(img, uu, vv, a4)
        lift = max(a1, a2)
        if lift > 0.1:  # horizontal forehead lines
            for k, vv in enumerate((-0.46, -0.53, -0.60)):
                w = 0.18 + 0.25 * a2 / max(lift, 1e-3)
                uu = np.linspace(-w, w, 9)
                self.crease(img, uu, vv - 0.02 * np.cos(uu / w * np.pi / 2) + 0.0 * k, lift * (0.9 - 0.2 * k))

    def eyes(self, img):
        i = self.id
        a5, a6, a7 = self.a("5"), self.a("6"), self.a("7")
        t = np.linspace(-1, 1, 15)
        for side in (-1, 1):
            cx, cy = side * i.eye_x, i.eye_y
            facing = float(self.sc.facing(cx, cy)[0])
            if facing < 0.12:
                continue
            up = i.eye_h * (1 + 0.75 * a5) * (1 - 0.35 * a7) * (1 - 0.25 * a6)
            lo = i.eye_h * 0.55 * (1 + 0.2 * a5) * (1 - 0.5 * a7) * (1 - 0.6 * a6)
            x = cx + side * t * i.eye_w / 2
            skew = 0.15 * (1 - t * side)  # the lid peak sits a little towards the nose
            y_up = cy - up * (1 - t**2) ** 0.85 * (1 + skew * 0.2)
            y_lo = cy + lo * (1 - t**2) ** 1.1
            opening = np.concatenate([self.sc.px(x, y_up, 0.01), self.sc.px(x[::-1], y_lo[::-1], 0.01)])
            _poly(img, opening, (236, 234, 228))
            r = i.eye_h * 0.95
            iris_c = self.sc.px(cx, cy - 0.1 * i.eye_h, 0.03)[0]
            rad = r * self.sc.scale * max(0.35, facing)
            cv2.ellipse(img, (int(iris_c[0] * 16), int(iris_c[1] * 16)),
                        (int(rad * facing**0.5 * 16), int(r * self.sc.scale * 16)),
                        0, 0, 360, self.id.iris, -1, AA, SHIFT)
            cv2.circle(img, (int(iris_c[0] * 16), int(iris_c[1] * 16)), int(rad * 0.45 * 16), (15, 12, 12), -1,
                       AA, SHIFT)
            hl = iris_c + np.array([-0.3, -0.35]) * rad
            cv2.circle(img, (int(hl[0] * 16), int(hl[1] * 16)), max(1, int(rad * 0.18 * 16)), (250, 250, 250), -1,
                       AA, SHIFT)
            # lids: skin above the upper lid and below the lower lid hides the overflowing iris
            lid_top = cy - i.eye_h * 2.6
            upper = np.concatenate([self.sc.px(x, y_up), self.sc.px(x[::-1], np.full_like(x, lid_top))])
            _poly(img, upper, self.id.skin)
            lower = np.concatenate([self.sc.px(x, y_lo), self.sc.px(x[::-1], np.full_like(x, cy + i.eye_h * 1.9))])
            _poly(img, lower, self.id.skin)
            lash = _scale(self.id.hair, 0.5)
            _line(img, self.sc.px(x, y_up), lash, round(1.6 * self.sc.scale / 55))
            _line(img, self.sc.px(x[2:-2], y_lo[2:-2]), _mix(self.id.skin, self.dark, 0.5))
            crease_y = y_up - i.eye_h * (0.55 - 0.3 * a5)
            self.crease(img, x[2:-1], crease_y[2:-1], 0.45 - 0.35 * a7)
            if a6 > 0.08:  # cheek raised: lower-lid furrow and crow's feet
                self.crease(img, x[1:-1], y_lo[1:-1] + i.eye_h * 0.9, a6)
                ox = cx + side * i.eye_w * 0.6
                for k in (-1, 0, 1):
                    self.crease(img, [ox, ox + side * 0.06], [cy + 0.005 * k, cy + 0.03 * k], a6 * 0.8)
            if a7 > 0.1:
                self.crease(img, x[3:-3], y_lo[3:-3] + i.eye_h * 0.5, a7 * 0.7)

    def nose(self, img):
        i = self.id
        a9 = self.a("9")
        tip_v = i.eye_y + i.nose_len
        lift = 0.03 * a9
        w = i.nose_w * (1 + 0.25 * a9)
        # silhouette of the nose: covers the far cheek when the head turns
        bridge = self.sc.surface(0.0, i.eye_y + 0.02, 0.02)
        tip = self.sc.surface(0.0, tip_v - lift, 0.0) + np.array([0, 0, 0.2])
        base = self.sc.surface(0.0, tip_v + 0.05 - lift, 0.06)
        alar = self.sc.surface(np.array([-w, w]), np.full(2, tip_v - lift), 0.04)
        hull = cv2.convexHull(self.sc.project(np.concatenate([bridge, tip, base, alar])).astype(np.float32))
        _poly(img, hull.reshape(-1, 2), self.id.skin)
        yaw_sign = 1 if self.s.yaw >= 0 else -1
        for side in (-1, 1):  # the sides of the nose, darker on the side turned away
            vv = np.linspace(i.eye_y + 0.05, tip_v - 0.02 - lift, 6)
            uu = side * (0.035 + 0.03 * np.linspace(0, 1, 6) ** 2)
            k = 0.35 if side == yaw_sign else 0.2
            self.crease(img, uu, vv, k + 0.3 * abs(self.s.yaw) / 60)
        for side in (-1, 1):  # nostrils and wings
            c = self.sc.project(self.sc.surface(side * w * 0.55, tip_v + 0.025 - lift, 0.06))[0]
            axes = (max(1, int(w * 0.32 * self.sc.scale * 16)), max(1, int(w * 0.18 * self.sc.scale * 16)))
            cv2.ellipse(img, (int(c[0] * 16), int(c[1] * 16)), axes, side * 15, 0, 360, _scale(self.id.skin, 0.35),
                        -1, AA, SHIFT)
            tt = np.linspace(-0.3, 1.3, 7)
            self.crease(img, side * (w * 0.6 + w * 0.45 * np.sin(tt * np.pi / 1.6)),
                        tip_v - lift - 0.04 + 0.07 * tt / 1.3, 0.55)
        if a9 > 0.08:  # wrinkles across the bridge
            for k in range(3):
                vv = i.eye_y + 0.02 + 0.035 * k
                uu = np.linspace(-0.07, 0.07, 5)
                self.crease(img, uu, vv + 0.012 * (uu / 0.07) ** 2, a9)

    def mouth(self, img):
        i = self.id
        a = self.a
        n = 21
        t = np.linspace(-1, 1, n)
        corner_dy, corner_dx = {}, {}
        for side in (-1, 1):
            a12, a14 = self.side_a("12", side), self.side_a("14", side)
            corner_dy[side] = -0.10 * a12 + 0.085 * a("15") + 0.02 * a("20") - 0.01 * a14
            corner_dx[side] = 0.04 * a12 + 0.075 * a("20") - 0.035 * a("23") - 0.012 * a14 - 0.05 * a("26") * (
                1 - a("20"))
        dy = np.where(t < 0, corner_dy[-1], corner_dy[1]) * np.abs(t) ** 1.7
        half_w = i.mouth_w + np.where(t < 0, corner_dx[-1], corner_dx[1])
        x = t * half_w
        line_y = i.mouth_y + dy - 0.012 * a("17") + 0.01 * a("26")
        open_ = 0.035 * a("25") + 0.16 * a("26") + 0.025 * a("16") * a("25")
        raise_up = 0.045 * a("10") + 0.01 * a("9")
        drop_lo = 0.045 * a("16")
        shape = 0.5 + 0.4 * a("20")  # higher: flatter, wider opening
        bump = (1 - t**2) ** shape
        thin = 1 - 0.6 * a("23")
        inner_up = line_y - raise_up * (1 - t**2) ** 0.6 - open_ * 0.25 * bump
        inner_lo = line_y + open_ * 0.75 * bump + drop_lo * (1 - t**2) ** 0.6
        bow = 1 - 0.35 * np.exp(-(t / 0.14) ** 2)
        outer_up = inner_up - i.lip_thick * 0.85 * thin * (1 - t**2) ** 0.45 * bow - 0.02 * a("10") * (1 - t**2)
        outer_lo = inner_lo + i.lip_thick * thin * (1 + 0.3 * a("16")) * (1 - t**2) ** 0.55
        if self.visible(0.0, i.mouth_y) < 0.05:
            return
        lips = np.concatenate([self.sc.px(x, outer_up, 0.02), self.sc.px(x[::-1], outer_lo[::-1], 0.02)])
        _poly(img, lips, self.id.lip)
        gap = inner_lo - inner_up
        if gap.max() > 0.012:
            mouth_in = np.concatenate([self.sc.px(x, inner_up, 0.02), self.sc.px(x[::-1], inner_lo[::-1], 0.02)])
            _poly(img, mouth_in, (70, 22, 28))
            teeth_h = np.minimum(gap, 0.045)
            if a("12") + a("10") + a("25") > 0.3:
                teeth = np.concatenate([self.sc.px(x[2:-2], inner_up[2:-2], 0.02),
                                        self.sc.px(x[2:-2][::-1], (inner_up + teeth_h * 0.85)[2:-2][::-1], 0.02)])
                _poly(img, teeth, (238, 236, 226))
            if a("16") + a("20") > 0.4:
                low_t = np.minimum(gap * 0.5, 0.03)
                teeth = np.concatenate([self.sc.px(x[4:-4], (inner_lo - low_t)[4:-4], 0.02),
                                        self.sc.px(x[4:-4][::-1], inner_lo[4:-4][::-1], 0.02)])
                _poly(img, teeth, (225, 222, 212))
        else:
            _line(img, self.sc.px(x, (inner_up + inner_lo) / 2, 0.02), _scale(self.id.lip, 0.5),
                  round(1.2 * self.sc.scale / 55))
        # folds, dimples and chin
        tip_v = i.eye_y + i.nose_len
        for side in (-1, 1):
            a12 = self.side_a("12", side)
            depth = i.folds + 0.8 * a12 + 0.5 * a("10") + 0.5 * a("9") + 0.25 * a("6")
            cx, cy = side * (i.mouth_w + corner_dx[side]), i.mouth_y + corner_dy[side]
            tt = np.linspace(0, 1, 7)
            uu = side * (i.nose_w + 0.05) + (cx + side * 0.05 - side * (i.nose_w + 0.05)) * tt
            vv = tip_v - 0.02 + (cy + 0.02 - tip_v + 0.02) * tt ** 0.8
            self.crease(img, uu + side * 0.04 * np.sin(np.pi * tt), vv, depth)
            a14 = self.side_a("14", side)
            if a14 > 0.08:
                self.crease(img, [cx + side * 0.025] * 3, [cy - 0.03, cy, cy + 0.03], a14)
        if a("17") > 0.1:
            uu = np.linspace(-0.1, 0.1, 7)
            self.crease(img, uu, i.mouth_y + 0.17 + 0.02 * (uu / 0.1) ** 2 + 0.01 * a("26"), a("17"))
        if a("15") > 0.3:
            for side in (-1, 1):
                cx, cy = side * (i.mouth_w + corner_dx[side]), i.mouth_y + corner_dy[side]
                self.crease(img, [cx, cx + side * 0.02], [cy + 0.01, cy + 0.08], a("15") * 0.7)

    def draw(self, img):
        self.head(img)
        self.brows(img)
        self.eyes(img)
        self.nose(img)
        self.mouth(img)


def _scene(spec: FaceSpec, size: int, jaw_drop: float) -> Scene:
    nz = spec.nuisance
    scale = 0.50 * size * nz.zoom
    return Scene(size=size, cx=size * (0.5 + nz.dx), cy=size * (0.47 + nz.dy), scale=scale,
                 rot=rotation(spec.yaw, spec.pitch, spec.roll), half_width=spec.identity.half_width, depth=0.85,
                 jaw=spec.identity.jaw, jaw_drop=jaw_drop)


def _feature_mask(spec: FaceSpec, scene: Scene, size: int) -> np.ndarray:
    """Where the expression would show (brows, eyes, nose wings, mouth, cheeks): the relevance of a neutral face."""
    i = spec.identity
    mask = np.zeros((size, size), np.uint8)
    regions = []
    for side in (-1, 1):
        regions.append((side * i.eye_x, i.eye_y - i.eye_h - i.brow_gap * 0.6, i.eye_w * 0.75, i.eye_h * 2.8))
    regions.append((0.0, i.mouth_y, i.mouth_w * 1.25, i.lip_thick * 2.4))
    for cu, cv_, ru, rv in regions:
        if scene.facing(cu, cv_)[0] < 0.1:
            continue
        ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        pix = scene.px(cu + ru * np.cos(ang), cv_ + rv * np.sin(ang), 0.02)
        cv2.fillPoly(mask, [to_fixed(pix)], 1, cv2.LINE_8, SHIFT)
    return mask


def render(spec: FaceSpec, size: int = 112) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one face.

    Returns:
        image uint8 (size, size, 3) RGB; relevance mask uint8 (size, size) in {0, 1}; occluder mask uint8.
    """
    from . import layers

    ident, nz = spec.identity, spec.nuisance
    rng = np.random.default_rng(nz.seed)
    occ_rng = np.random.default_rng(spec.occluder_seed)
    au = np.clip(spec.au + ident.bias, 0.0, 1.0)
    rest = np.zeros_like(au)
    base_scene = _scene(spec, size, 0.0)
    bg = layers.background(size, nz.background, nz.clutter, rng)
    hit, pts, normals = base_scene.raycast()
    shade = layers.shading(base_scene, nz.light, nz.ambient, hit, normals)
    hair_a = layers.hair_alpha(base_scene, ident.hairline, ident.hair_style, hit, pts)[..., None]
    faces = []
    for state in (rest, au):
        scene = _scene(spec, size, 0.10 * float(state[AU_INDEX["26"]]))
        img = bg.copy()
        if ident.hair_style == 1:
            layers.long_hair(img, scene, ident.hair)
        layers.neck_and_shoulders(img, scene, ident.skin, ident.cloth)
        for side in (-1, 1):
            if not layers.ear_faces_viewer(scene, side):
                layers.ear(img, scene, side, ident.skin)
        _Face(spec, state, scene).draw(img)
        for side in (-1, 1):
            if layers.ear_faces_viewer(scene, side):
                layers.ear(img, scene, side, ident.skin)
        faces.append(img)
    # light and hair once, on the expressive face; the mask comes from the unlit difference
    img = faces[1]
    f = img.astype(np.float32) * shade[..., None]
    hair_rgb = np.asarray(ident.hair, np.float32) * (0.55 + 0.6 * shade[..., None])
    f = f * (1 - hair_a) + hair_rgb * hair_a
    img = np.clip(f, 0, 255).astype(np.uint8)
    if ident.glasses:
        layers.glasses(img, scene, ident.eye_x, ident.eye_y, ident.eye_w)
    occ = layers.occluder(img, scene, spec.occluder, ident, occ_rng)
    diff = np.abs(faces[0].astype(np.int16) - faces[1].astype(np.int16)).sum(-1) > 24
    mask = cv2.dilate(diff.astype(np.uint8), _KERNEL)
    if mask.sum() < 0.004 * size * size:  # no visible expression: the regions where one would show
        mask = _feature_mask(spec, base_scene, size)
    mask &= (hair_a[..., 0] < 0.5).astype(np.uint8)
    mask &= 1 - occ
    image = layers.camera(img, nz, rng)
    return image, mask.astype(np.uint8), occ


def face_region(spec: FaceSpec, size: int = 112) -> np.ndarray:
    """uint8 mask of the head's silhouette with the expression's jaw position (for checks and metrics)."""
    au = np.clip(spec.au + spec.identity.bias, 0.0, 1.0)
    scene = _scene(spec, size, 0.10 * float(au[AU_INDEX["26"]]))
    out = np.zeros((size, size), np.uint8)
    cv2.fillPoly(out, [to_fixed(scene.outline())], 1, cv2.LINE_8, SHIFT)
    return out
