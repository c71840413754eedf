"""Rendering of one SynthFACS face from identity, action units, pose, occluder and nuisances.

Pure function of a :class:`FaceSpec`: the same spec always gives the same pixels. The face is drawn twice,
once at rest (all AUs zero) and once with the expression, on the same subject, pose, light and occluder;
where the two differ (slightly dilated, minus occluded pixels) is the ground-truth relevance mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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


def _poly(img, pts, color):
    cv2.fillPoly(img, [to_fixed(pts)], color, AA, SHIFT)


class _Face:
    """Draws the AU-dependent face of one spec.

    Drawing is deferred: every primitive is queued with its face-plane points, and :meth:`flush` projects all
    points of the face in one call before drawing the queue in order (one projection instead of hundreds keeps
    a face at a few milliseconds).
    """

    def __init__(self, spec: FaceSpec, au: np.ndarray, scene: Scene):
        self.s, self.au, self.sc, self.id = spec, au, scene, spec.identity
        self.px_per_unit = scene.scale
        self.dark = _scale(self.id.skin, 0.45)
        self.line_w = max(1, round(scene.scale / 55))
        # how much the left, centre and right of the face turn to the viewer, at eye and mouth height
        grid_u = np.array([-0.5, -0.25, 0.0, 0.25, 0.5] * 2)
        grid_v = np.repeat([spec.identity.eye_y, spec.identity.mouth_y], 5)
        self._vis = scene.facing(grid_u, grid_v).reshape(2, 5)
        self._queue: list[tuple] = []
        self._u: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._dz: list[float] = []
        self._dz_arrays: list[tuple[int, np.ndarray]] = []
        self._n = 0

    # -- queue -------------------------------------------------------------------------------------------------
    def _add(self, u, v, dz) -> tuple[int, int]:
        u = np.asarray(u, np.float64).ravel()
        v = np.asarray(v, np.float64).ravel()
        if u.size != v.size:
            u, v = np.broadcast_arrays(u, v)
        self._u.append(u)
        self._v.append(v)
        start = self._n
        if isinstance(dz, np.ndarray):  # one depth per point
            self._dz_arrays.append((start, dz))
            dz = 0.0
        self._dz.append(dz)
        self._n += u.size
        return start, self._n

    def poly(self, u, v, color, dz=0.0):
        self._queue.append(("poly", self._add(u, v, dz), color))

    def hull(self, u, v, color, dz=0.0):
        self._queue.append(("hull", self._add(u, v, dz), color))

    def line(self, u, v, color, thickness: int = 1, dz=0.0):
        self._queue.append(("line", self._add(u, v, dz), color, max(1, int(thickness))))

    def ellipse(self, u, v, axes_px: tuple[float, float], angle: float, color, dz=0.0):
        self._queue.append(("ellipse", self._add([u], [v], dz), color, axes_px, angle))

    def flush(self, img):
        """Project every queued point at once and draw the queue in order."""
        if not self._queue:
            return
        dz = np.repeat(np.asarray(self._dz, np.float64), [u.size for u in self._u])
        for start, arr in self._dz_arrays:
            dz[start:start + arr.size] += arr
        pix = self.sc.project(self.sc.surface(np.concatenate(self._u), np.concatenate(self._v), dz))
        fixed = np.round(pix * (1 << SHIFT)).astype(np.int32)
        for cmd in self._queue:
            kind, (a, b), color = cmd[0], cmd[1], cmd[2]
            pts = fixed[a:b].reshape(-1, 1, 2)
            if kind == "poly":
                cv2.fillPoly(img, [pts], color, AA, SHIFT)
            elif kind == "hull":
                cv2.fillPoly(img, [cv2.convexHull(pts)], color, AA, SHIFT)
            elif kind == "line":
                cv2.polylines(img, [pts], False, color, cmd[3], AA, SHIFT)
            else:
                axes = (max(1, int(cmd[3][0] * (1 << SHIFT))), max(1, int(cmd[3][1] * (1 << SHIFT))))
                cv2.ellipse(img, (int(pts[0, 0, 0]), int(pts[0, 0, 1])), axes, cmd[4], 0, 360, color, -1, AA, SHIFT)
        self._queue.clear()

    # -- helpers -----------------------------------------------------------------------------------------------
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

    def crease(self, u, v, strength: float, width: float = 1.0):
        """A skin line (wrinkle, fold) whose darkness follows ``strength``; hidden where the face turns away."""
        if strength <= 0.03:
            return
        if self.visible(0.5 * float(u[0] + u[-1]), 0.5 * float(v[0] + v[-1])) < 0.15:
            return
        color = _mix(self.id.skin, self.dark, min(1.0, strength) * 0.75)
        self.line(u, v, color, round(width * self.line_w))

    # -- features ----------------------------------------------------------------------------------------------
    def brows(self):
        i = self.id
        a1, a2, a4 = self.a("1"), self.a("2"), self.a("4")
        base = i.eye_y - i.eye_h - i.brow_gap
        color = _mix(self.id.hair, self.id.skin, 0.25)
        for side in (-1, 1):
            inner_x = i.eye_x - i.eye_w * 0.55 - 0.05 * a4
            outer_x = i.eye_x + i.eye_w * 0.62
            x = inner_x + (outer_x - inner_x) * _T9
            y = base - i.brow_arch * _ARCH9
            y = y - 0.10 * a1 * _INNER9 - 0.085 * a2 * _OUTER9 + 0.06 * a4 + 0.035 * a4 * (1 - _T9)
            y = y + 0.03 * a1 * a4 * (1 - _T9)  # sad brows: oblique
            if self.visible(side * float(x.mean()), float(y.mean())) < 0.05:
                continue
            th = i.brow_thick * (1.0 - 0.55 * _T9) * (1 + 0.2 * a4)
            self.poly(side * np.concatenate([x, x[::-1]]), np.concatenate([y - th / 2, (y + th / 2)[::-1]]), color)
        if a4 > 0.05:  # vertical furrows between the brows
            for side in (-1, 1):
                self.crease([side * 0.045] * 2, [base - 0.02, base + 0.09], a4)
        lift = max(a1, a2)
        if lift > 0.1:  # horizontal forehead lines
            w = 0.18 + 0.25 * a2 / max(lift, 1e-3)
            uu = w * _S9
            for k, vv in enumerate((-0.46, -0.53, -0.60)):
                self.crease(uu, vv - 0.02 * _COS9, lift * (0.9 - 0.2 * k))

    def eyes(self):
        i = self.id
        a5, a6, a7 = self.a("5"), self.a("6"), self.a("7")
        t = _S15
        for side in (-1, 1):
            cx, cy = side * i.eye_x, i.eye_y
            facing = float(self.sc.facing(cx, cy)[0])
            if facing < 0.12:
                continue
            up = i.eye_h * (1 + 0.75 * a5) * (1 - 0.35 * a7) * (1 - 0.25 * a6)
            lo = i.eye_h * 0.55 * (1 + 0.2 * a5) * (1 - 0.5 * a7) * (1 - 0.6 * a6)
            x = cx + side * t * i.eye_w / 2
            skew = 0.15 * (1 - t * side)  # the lid peak sits a little towards the nose
            y_up = cy - up * _LID_UP * (1 + skew * 0.2)
            y_lo = cy + lo * _LID_LO
            self.poly(np.concatenate([x, x[::-1]]), np.concatenate([y_up, y_lo[::-1]]), (236, 234, 228), 0.01)
            r = i.eye_h * 0.95
            rad = r * self.sc.scale * max(0.35, facing)
            self.ellipse(cx, cy - 0.1 * i.eye_h, (rad * facing**0.5, r * self.sc.scale), 0, self.id.iris, 0.03)
            self.ellipse(cx, cy - 0.1 * i.eye_h, (rad * 0.45, rad * 0.45), 0, (15, 12, 12), 0.03)
            self.ellipse(cx - 0.3 * r, cy - 0.1 * i.eye_h - 0.35 * r, (rad * 0.18, rad * 0.18), 0, (250, 250, 250),
                         0.035)
            # lids: skin above the upper lid and below the lower lid hides the overflowing iris
            self.poly(np.concatenate([x, x[::-1]]), np.concatenate([y_up, np.full_like(x, cy - i.eye_h * 2.6)]),
                      self.id.skin)
            self.poly(np.concatenate([x, x[::-1]]), np.concatenate([y_lo, np.full_like(x, cy + i.eye_h * 1.9)]),
                      self.id.skin)
            self.line(x, y_up, _scale(self.id.hair, 0.5), round(1.6 * self.sc.scale / 55))
            self.line(x[2:-2], y_lo[2:-2], _mix(self.id.skin, self.dark, 0.5))
            crease_y = y_up - i.eye_h * (0.55 - 0.3 * a5)
            self.crease(x[2:-1], crease_y[2:-1], 0.45 - 0.35 * a7)
            if a6 > 0.08:  # cheek raised: lower-lid furrow and crow's feet
                self.crease(x[1:-1], y_lo[1:-1] + i.eye_h * 0.9, a6)
                ox = cx + side * i.eye_w * 0.6
                for k in (-1, 0, 1):
                    self.crease([ox, ox + side * 0.06], [cy + 0.005 * k, cy + 0.03 * k], a6 * 0.8)
            if a7 > 0.1:
                self.crease(x[3:-3], y_lo[3:-3] + i.eye_h * 0.5, a7 * 0.7)

    def nose(self):
        i = self.id
        a9 = self.a("9")
        tip_v = i.eye_y + i.nose_len
        lift = 0.03 * a9
        w = i.nose_w * (1 + 0.25 * a9)
        # silhouette of the nose: covers the far cheek when the head turns
        self.hull([0.0, 0.0, 0.0, -w, w], [i.eye_y + 0.02, tip_v - lift, tip_v + 0.05 - lift, tip_v - lift,
                                          tip_v - lift], self.id.skin, np.array([0.02, 0.2, 0.06, 0.04, 0.04]))
        yaw_sign = 1 if self.s.yaw >= 0 else -1
        vv = np.linspace(i.eye_y + 0.05, tip_v - 0.02 - lift, 6)
        for side in (-1, 1):  # the sides of the nose, darker on the side turned away
            k = 0.35 if side == yaw_sign else 0.2
            self.crease(side * (0.035 + 0.03 * _SQ6), vv, k + 0.3 * abs(self.s.yaw) / 60)
        nostril = _scale(self.id.skin, 0.35)
        for side in (-1, 1):  # nostrils and wings
            axes = (w * 0.32 * self.sc.scale, w * 0.18 * self.sc.scale)
            self.ellipse(side * w * 0.55, tip_v + 0.025 - lift, axes, side * 15, nostril, 0.06)
            self.crease(side * (w * 0.6 + w * 0.45 * _WING7), tip_v - lift - 0.04 + 0.07 * _TT7 / 1.3, 0.55)
        if a9 > 0.08:  # wrinkles across the bridge
            uu = 0.07 * _S5
            for k in range(3):
                self.crease(uu, i.eye_y + 0.02 + 0.035 * k + 0.012 * _S5**2, a9)

    def mouth(self):
        i = self.id
        a = self.a
        t = _S21
        corner_dy, corner_dx = {}, {}
        for side in (-1, 1):
            a12, a14 = self.side_a("12", side), self.side_a("14", side)
            corner_dy[side] = -0.10 * a12 + 0.085 * a("15") + 0.02 * a("20") - 0.01 * a14
            corner_dx[side] = 0.04 * a12 + 0.075 * a("20") - 0.035 * a("23") - 0.012 * a14 - 0.05 * a("26") * (
                1 - a("20"))
        dy = np.where(t < 0, corner_dy[-1], corner_dy[1]) * _ABS21
        half_w = i.mouth_w + np.where(t < 0, corner_dx[-1], corner_dx[1])
        x = t * half_w
        line_y = i.mouth_y + dy - 0.012 * a("17") + 0.01 * a("26")
        open_ = 0.035 * a("25") + 0.16 * a("26") + 0.025 * a("16") * a("25")
        raise_up = 0.045 * a("10") + 0.01 * a("9")
        drop_lo = 0.045 * a("16")
        bump = _ONE_MINUS_T2_21 ** (0.5 + 0.4 * a("20"))  # stretched lips: flatter, wider opening
        thin = 1 - 0.6 * a("23")
        inner_up = line_y - raise_up * _P06 - open_ * 0.25 * bump
        inner_lo = line_y + open_ * 0.75 * bump + drop_lo * _P06
        outer_up = inner_up - i.lip_thick * 0.85 * thin * _P045 * _BOW - 0.02 * a("10") * _ONE_MINUS_T2_21
        outer_lo = inner_lo + i.lip_thick * thin * (1 + 0.3 * a("16")) * _P055
        if self.visible(0.0, i.mouth_y) < 0.05:
            return
        xx = np.concatenate([x, x[::-1]])
        self.poly(xx, np.concatenate([outer_up, outer_lo[::-1]]), self.id.lip, 0.02)
        gap = inner_lo - inner_up
        if gap.max() > 0.012:
            self.poly(xx, np.concatenate([inner_up, inner_lo[::-1]]), (70, 22, 28), 0.02)
            teeth_h = np.minimum(gap, 0.045)
            if a("12") + a("10") + a("25") > 0.3:
                xs = x[2:-2]
                self.poly(np.concatenate([xs, xs[::-1]]),
                          np.concatenate([inner_up[2:-2], (inner_up + teeth_h * 0.85)[2:-2][::-1]]),
                          (238, 236, 226), 0.02)
            if a("16") + a("20") > 0.4:
                low_t = np.minimum(gap * 0.5, 0.03)
                xs = x[4:-4]
                self.poly(np.concatenate([xs, xs[::-1]]),
                          np.concatenate([(inner_lo - low_t)[4:-4], inner_lo[4:-4][::-1]]), (225, 222, 212), 0.02)
        else:
            self.line(x, (inner_up + inner_lo) / 2, _scale(self.id.lip, 0.5), round(1.2 * self.sc.scale / 55), 0.02)
        # folds, dimples and chin
        tip_v = i.eye_y + i.nose_len
        for side in (-1, 1):
            a12 = self.side_a("12", side)
            depth = i.folds + 0.8 * a12 + 0.5 * a("10") + 0.5 * a("9") + 0.25 * a("6")
            cx, cy = side * (i.mouth_w + corner_dx[side]), i.mouth_y + corner_dy[side]
            start = side * (i.nose_w + 0.05)
            uu = start + (cx + side * 0.05 - start) * _T7
            vv = tip_v - 0.02 + (cy + 0.04 - tip_v) * _T7**0.8
            self.crease(uu + side * 0.04 * _SIN7, vv, depth)
            a14 = self.side_a("14", side)
            if a14 > 0.08:
                self.crease([cx + side * 0.025] * 3, [cy - 0.03, cy, cy + 0.03], a14)
        if a("17") > 0.1:
            uu = 0.1 * _S7
            self.crease(uu, i.mouth_y + 0.17 + 0.02 * _S7**2 + 0.01 * a("26"), a("17"))
        if a("15") > 0.3:
            for side in (-1, 1):
                cx, cy = side * (i.mouth_w + corner_dx[side]), i.mouth_y + corner_dy[side]
                self.crease([cx, cx + side * 0.02], [cy + 0.01, cy + 0.08], a("15") * 0.7)

    def draw(self, img):
        _poly(img, self.sc.outline(), self.id.skin)
        self.brows()
        self.eyes()
        self.nose()
        self.mouth()
        self.flush(img)


# constant curve parameters, computed once
_T9 = np.linspace(0, 1, 9)
_ARCH9 = np.sin(np.pi * (0.15 + 0.8 * _T9))
_INNER9 = (1 - _T9) ** 1.5
_OUTER9 = _T9**1.2
_S9 = np.linspace(-1, 1, 9)
_COS9 = np.cos(_S9 * np.pi / 2)
_S15 = np.linspace(-1, 1, 15)
_LID_UP = (1 - _S15**2) ** 0.85
_LID_LO = (1 - _S15**2) ** 1.1
_SQ6 = np.linspace(0, 1, 6) ** 2
_TT7 = np.linspace(-0.3, 1.3, 7)
_WING7 = np.sin(_TT7 * np.pi / 1.6)
_S5 = np.linspace(-1, 1, 5)
_S7 = np.linspace(-1, 1, 7)
_T7 = np.linspace(0, 1, 7)
_SIN7 = np.sin(np.pi * _T7)
_S21 = np.linspace(-1, 1, 21)
_ABS21 = np.abs(_S21) ** 1.7
_ONE_MINUS_T2_21 = 1 - _S21**2
_P06 = _ONE_MINUS_T2_21**0.6
_P045 = _ONE_MINUS_T2_21**0.45
_P055 = _ONE_MINUS_T2_21**0.55
_BOW = 1 - 0.35 * np.exp(-(_S21 / 0.14) ** 2)


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
    # light and hair coverage vary slowly: ray-cast them at half resolution and upsample
    half = replace(base_scene, size=size // 2, cx=base_scene.cx / 2, cy=base_scene.cy / 2, scale=base_scene.scale / 2)
    hit, pts, normals = half.raycast()
    shade = cv2.resize(layers.shading(half, nz.light, nz.ambient, hit, normals), (size, size))
    hair_a = cv2.resize(layers.hair_alpha(half, ident.hairline, ident.hair_style, hit, pts), (size, size))[..., None]
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
