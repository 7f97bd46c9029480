"""StickWorld scenes: seeded characters, backgrounds, poses, prompts, and their drawings.

A scene is one character (skin, shirt and trousers colours, a shirt pattern, body proportions, and for about
half of them an accessory: a dress, a cape, long hair, a ball or a staff) in one pose over one procedural background (gradient, stripes, checkers or blobs). ``draw_scene`` renders it at
``size`` x ``size`` (default 32) with the character's mask, the OpenPose rendering of its pose (as PATA
renders it) and a short attribute prompt. Everything is drawn at 4x and area-downsampled, so edges are
anti-aliased. All randomness comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pata import render_pose
from pata.figure import ADULT, body3d, project
from pata.skeleton import L_ANKLE, L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NECK
from pata.skeleton import R_ANKLE, R_ELBOW, R_HIP, R_KNEE, R_SHOULDER, R_WRIST

SIZE = 32
SUPERSAMPLE = 4

# Named colours (RGB 0-255); a character's actual colour is its name's colour jittered, so the prompt says
# "red" while the exact shade is the character's own (what inversion and DCAM must keep).
COLOURS = {
    "red": (205, 40, 40), "orange": (235, 130, 30), "yellow": (235, 215, 45), "green": (45, 160, 60),
    "teal": (25, 150, 150), "blue": (40, 75, 210), "purple": (130, 50, 175), "pink": (235, 125, 175),
    "white": (240, 240, 240), "black": (25, 25, 30), "brown": (125, 75, 40), "grey": (128, 128, 128),
}
SKIN_TONES = ((255, 222, 185), (232, 185, 145), (195, 140, 100), (140, 95, 60), (95, 62, 40))
PATTERNS = ("plain", "striped", "dotted")
BACKGROUNDS = ("gradient", "stripes", "checkers", "blobs")
TEMPLATE = "figure in {pattern} {shirt} shirt and {trousers} trousers{accessory} on {background} background"
# Accessories: silhouettes past the skeleton, drawn from the pose and the proportions. "none" is not said in the
# prompt; the others add " with {colour} {accessory}" (so the longest prompt is 14 words).
ACCESSORIES = ("none", "dress", "cape", "hair", "ball", "staff")
ACCESSORY_PHRASE = " with {colour} {accessory}"
ACCESSORY_RATE = 0.5  # the fraction of sampled characters that wear or hold one
BEHIND = ("cape", "hair")  # drawn before the body (the body covers them); the rest after the trousers or last

# Limb widths in torso lengths, and which keypoint pairs each garment covers.
ARM_WIDTH = 0.26
LEG_WIDTH = 0.32
HEAD_RADIUS = 0.27
UPPER_ARMS = ((R_SHOULDER, R_ELBOW), (L_SHOULDER, L_ELBOW))
FOREARMS = ((R_ELBOW, R_WRIST), (L_ELBOW, L_WRIST))
LEGS = ((R_HIP, R_KNEE), (R_KNEE, R_ANKLE), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE))


def _jitter(rgb, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float64) / 255.0 + rng.uniform(-amount, amount, 3), 0.0, 1.0)


@dataclasses.dataclass
class Character:
    """A StickWorld character: colours in 0..1 RGB, names for the prompt, pattern and body proportions, and an
    optional accessory (``accessory`` in ACCESSORIES; its colour, the colour's name, and for a ball or a staff
    the holding hand, "r" or "l")."""

    skin: np.ndarray
    shirt: np.ndarray
    trousers: np.ndarray
    shirt_name: str
    trousers_name: str
    pattern: str
    proportions: dict
    accessory: str = "none"
    accessory_colour: np.ndarray | None = None
    accessory_name: str = ""
    hand: str = "r"

    def __post_init__(self):
        if self.accessory not in ACCESSORIES:
            raise ValueError(f"accessory: must be one of {ACCESSORIES}, got {self.accessory!r}")
        if self.accessory != "none" and (self.accessory_colour is None or self.accessory_name not in COLOURS):
            raise ValueError(f"accessory_colour: a {self.accessory} needs a colour and a colour name from COLOURS")
        if self.hand not in ("r", "l"):
            raise ValueError(f"hand: must be 'r' or 'l', got {self.hand!r}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Character":
        names = list(COLOURS)
        shirt, trousers, extra = rng.choice(len(names), 3, replace=False)
        skin = _jitter(SKIN_TONES[rng.integers(len(SKIN_TONES))], rng, 0.04)
        prop = {k: v * rng.uniform(0.88, 1.12) for k, v in ADULT.items()}
        character = cls(skin, _jitter(COLOURS[names[shirt]], rng, 0.08), _jitter(COLOURS[names[trousers]], rng, 0.08),
                        names[shirt], names[trousers], PATTERNS[rng.integers(len(PATTERNS))], prop)
        if rng.random() < ACCESSORY_RATE:
            character.accessory = ACCESSORIES[1 + rng.integers(len(ACCESSORIES) - 1)]
            character.accessory_name = names[extra]
            character.accessory_colour = _jitter(COLOURS[names[extra]], rng, 0.08)
            character.hand = "r" if rng.random() < 0.5 else "l"
        return character

    @property
    def extended(self) -> bool:
        """Whether the silhouette extends past the skeleton's limb capsules (the character has an accessory)."""
        return self.accessory != "none"

    def words(self) -> tuple:
        """The prompt's words that name the character: pattern, shirt colour, trousers colour, and the accessory's
        colour and word if it has one (each occurs once in its prompt)."""
        extra = (self.accessory_name, self.accessory) if self.extended else ()
        return (self.pattern, self.shirt_name, self.trousers_name) + extra

    def shade(self) -> np.ndarray:
        """The colour of the shirt pattern's marks (darker, or lighter on a dark shirt)."""
        return self.shirt * 0.45 if self.shirt.mean() > 0.35 else self.shirt * 0.4 + 0.55

    def palette(self) -> np.ndarray:
        """The character's colours (K, 3) in 0..1: skin, shirt, trousers, the accessory's colour if any, and the
        pattern's shade if any."""
        colours = [self.skin, self.shirt, self.trousers] + ([self.accessory_colour] if self.extended else [])
        return np.stack(colours + ([self.shade()] if self.pattern != "plain" else []))


@dataclasses.dataclass
class Background:
    """A procedural background: ``kind`` in BACKGROUNDS, two or more colours and the kind's parameters."""

    kind: str
    colours: np.ndarray
    angle: float
    period: float
    phase: float
    blobs: np.ndarray  # (K, 4): x, y, radius (0..1 units), colour index

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Background":
        kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        colours = rng.uniform(0.05, 0.95, (3, 3))
        k = int(rng.integers(3, 6))
        blobs = np.column_stack([rng.uniform(0, 1, k), rng.uniform(0, 1, k), rng.uniform(0.12, 0.3, k),
                                 rng.integers(1, 3, k)])
        return cls(kind, colours, float(rng.uniform(0, math.pi)), float(rng.uniform(0.18, 0.4)),
                   float(rng.uniform(0, 1)), blobs)

    def draw(self, size: int) -> np.ndarray:
        """The background as float32 (size, size, 3) in 0..1."""
        u = (np.arange(size) + 0.5) / size
        x, y = np.meshgrid(u, u)
        d = x * math.cos(self.angle) + y * math.sin(self.angle)
        a, b = self.colours[0], self.colours[1]
        if self.kind == "gradient":
            t = np.clip((d - d.min()) / max(d.max() - d.min(), 1e-6), 0, 1)[..., None]
            img = a * (1 - t) + b * t
        elif self.kind == "stripes":
            on = (np.floor(d / (self.period / 2) + self.phase) % 2)[..., None]
            img = a * (1 - on) + b * on
        elif self.kind == "checkers":
            cell = self.period / 1.5
            on = ((np.floor(x / cell + self.phase) + np.floor(y / cell + self.phase)) % 2)[..., None]
            img = a * (1 - on) + b * on
        else:
            img = np.broadcast_to(a, (size, size, 3)).copy()
            for bx, by, r, ci in self.blobs:
                w = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * (r / 2) ** 2))[..., None]
                img = img * (1 - w) + self.colours[int(ci)] * w
        return np.asarray(img, dtype=np.float32)


def random_angles(rng: np.random.Generator) -> tuple[dict, float]:
    """Random joint angles for ``pata.figure.body3d`` and a body yaw (degrees)."""
    u = rng.uniform
    p = {}
    for side in ("r", "l"):
        abd = u(0, 175)
        p[f"{side}_shoulder"] = (abd, u(-35, 35))
        p[f"{side}_elbow"] = (abd + u(-40, 70), u(-20, 40))
        hip = u(0, 35)
        p[f"{side}_hip"] = (hip, u(-40, 40))
        p[f"{side}_knee"] = (hip + u(-10, 20), u(-40, 10))
    p.update(lean=u(-12, 12), crouch=u(0, 0.12), head_yaw=u(-30, 30))
    yaw = u(-60, 60) if rng.random() < 0.7 else u(-180, 180)
    return p, float(yaw)


def random_pose(rng: np.random.Generator, character: Character, size: int = SIZE) -> np.ndarray:
    """A random OpenPose body (18, 3) in pixels of a ``size`` canvas, in ``character``'s proportions."""
    p, yaw = random_angles(rng)
    scale = rng.uniform(0.82, 1.05)
    centre = (size / 2 + rng.uniform(-0.12, 0.12) * size, 0.47 * size + rng.uniform(-0.06, 0.06) * size)
    return project(body3d(p, character.proportions), yaw, centre, 0.25 * size * scale)


def _segment(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, value) -> None:
    shift = 4  # sub-pixel precision for OpenCV
    pa = tuple(int(round(v * (1 << shift))) for v in a)
    pb = tuple(int(round(v * (1 << shift))) for v in b)
    cv2.line(canvas, pa, pb, value, max(1, int(round(width))), cv2.LINE_AA, shift)


def _disc(canvas: np.ndarray, c: np.ndarray, r: float, value) -> None:
    shift = 4
    cv2.circle(canvas, tuple(int(round(v * (1 << shift))) for v in c), int(round(r * (1 << shift))), value, -1,
               cv2.LINE_AA, shift)


def _polygon(canvas: np.ndarray, points, value) -> None:
    cv2.fillPoly(canvas, [np.round(np.asarray(points) * 16).astype(np.int32)], value, cv2.LINE_AA, 4)


def _accessory_layer(k: np.ndarray, torso: float, prop: dict, accessory: str, hand: str,
                     hw: tuple[int, int]) -> np.ndarray:
    """Coverage of ``accessory`` for keypoints ``k`` (scaled pixels) whose torso is ``torso`` pixels long. Built in
    the body's own frame (``up`` from mid-hip to neck, ``side`` across it), sized by the character's proportions
    (torso units), so it moves and turns with the body."""
    canvas = np.zeros(hw, np.float32)
    hip = (k[R_HIP] + k[L_HIP]) / 2
    up = (k[NECK] - hip) / torso
    side = np.array([-up[1], up[0]])
    shoulders = abs(float(np.dot(k[L_SHOULDER] - k[R_SHOULDER], side))) / torso  # projected width, torso units
    leg = prop["thigh"] + prop["shin"]
    if accessory == "dress":  # a skirt from the waist that flares past the legs down to below the knees
        waist = hip + up * 0.3 * torso
        hem = hip - up * 0.8 * leg * torso
        knees = [abs(float(np.dot(k[j] - hip, side))) / torso for j in (R_KNEE, L_KNEE)]
        top = max(0.5 * shoulders + 0.05, 0.3)
        flare = max(max(knees) + LEG_WIDTH / 2 + 0.25, 0.6)
        _polygon(canvas, [waist - side * top * torso, waist + side * top * torso,
                          hem + side * flare * torso, hem - side * flare * torso], 1.0)
    elif accessory == "cape":  # behind the torso, wider than the shoulders, down to the knees
        top_c = k[NECK] - up * 0.05 * torso
        hem = hip - up * prop["thigh"] * torso
        top = max(0.6 * shoulders + 0.08, 0.3)
        _polygon(canvas, [top_c - side * top * torso, top_c + side * top * torso,
                          hem + side * (top + 0.3) * torso, hem - side * (top + 0.3) * torso], 1.0)
    elif accessory == "hair":  # long hair: a mane round the head, down the back past the shoulders
        head = k[NECK] + up * 0.4 * torso
        r = HEAD_RADIUS * 1.4
        _disc(canvas, head, r * torso, 1.0)
        end = k[NECK] - up * 0.6 * torso
        _polygon(canvas, [head - side * r * torso, head + side * r * torso,
                          end + side * (r + 0.25) * torso, end - side * (r + 0.25) * torso], 1.0)
    elif accessory in ("ball", "staff"):  # held in one hand, past the wrist
        elbow, wrist = (k[R_ELBOW], k[R_WRIST]) if hand == "r" else (k[L_ELBOW], k[L_WRIST])
        forearm = wrist - elbow
        direction = forearm / max(float(np.linalg.norm(forearm)), 1e-6)
        if accessory == "ball":
            r = 0.3 * torso
            _disc(canvas, wrist + direction * (r + 0.1 * torso), r, 1.0)
        else:  # upright along the body's axis, gripped a third of the way up
            _segment(canvas, wrist - up * 0.65 * leg * torso, wrist + up * 0.35 * leg * torso, 0.17 * torso, 1.0)
    return canvas


def _garment_layers(pose: np.ndarray, scale: float, hw: tuple[int, int], accessory: str = "none",
                    hand: str = "r", proportions: dict | None = None) -> list[tuple[str, np.ndarray]]:
    """Coverage maps (float32 0..1, shape ``hw``) per garment, in drawing order, at ``scale`` x the pose's
    pixels; an ``accessory`` other than "none" adds an "accessory" layer (behind the body for a cape or hair,
    over the trousers for a dress, in front for a held ball or staff)."""
    k = pose[:, :2] * scale
    hip = (k[R_HIP] + k[L_HIP]) / 2
    torso = max(float(np.linalg.norm(k[NECK] - hip)), 1.0)
    h, w = hw
    layers = []
    extra = None
    if accessory != "none":
        extra = ("accessory", _accessory_layer(k, torso, ADULT if proportions is None else proportions, accessory,
                                               hand, hw))
    if accessory in BEHIND:
        layers.append(extra)

    def layer():
        return np.zeros((h, w), np.float32)

    legs = layer()
    for i, j in LEGS:
        _segment(legs, k[i], k[j], LEG_WIDTH * torso, 1.0)
    layers.append(("trousers", legs))
    if accessory == "dress":
        layers.append(extra)
    shirt = layer()
    centre = (k[R_SHOULDER] + k[L_SHOULDER] + k[R_HIP] + k[L_HIP]) / 4
    quad = np.array([k[R_SHOULDER], k[L_SHOULDER], k[L_HIP], k[R_HIP]])
    quad = centre + (quad - centre) * 1.18  # a little wider than the joints
    cv2.fillConvexPoly(shirt, np.round(quad * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    _segment(shirt, k[NECK], hip, 0.5 * torso, 1.0)
    for i, j in UPPER_ARMS:
        _segment(shirt, k[i], k[j], ARM_WIDTH * torso, 1.0)
    layers.append(("shirt", shirt))
    skin = layer()
    for i, j in FOREARMS:
        _segment(skin, k[i], k[j], ARM_WIDTH * torso * 0.9, 1.0)
    up = (k[NECK] - hip) / torso
    _disc(skin, k[NECK] + up * 0.4 * torso, HEAD_RADIUS * torso, 1.0)
    layers.append(("skin", skin))
    if accessory in ("ball", "staff"):
        layers.append(extra)
    return layers


def draw_character(character: Character, pose: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``character`` in ``pose`` (pixels of the background's size) over ``background`` (H, W, 3).
    Returns (image float32 (H, W, 3) in 0..1, mask bool (H, W))."""
    size = background.shape[0]
    big = size * SUPERSAMPLE
    img = cv2.resize(background, (big, big), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    cover = np.zeros((big, big), np.float32)
    layers = _garment_layers(pose, SUPERSAMPLE, (big, big), character.accessory, character.hand,
                             character.proportions)
    for name, alpha in layers:
        colour = {"trousers": character.trousers, "shirt": character.shirt, "skin": character.skin,
                  "accessory": character.accessory_colour}[name]
        paint = np.broadcast_to(colour.astype(np.float32), img.shape)
        if name == "shirt" and character.pattern != "plain":
            yy, xx = np.mgrid[0:big, 0:big] / SUPERSAMPLE
            if character.pattern == "striped":
                on = (np.floor(yy / 2.0) % 2 == 1)
            else:
                on = ((np.floor(yy / 2.0) % 2 == 1) & (np.floor(xx / 2.0) % 2 == 1))
            paint = np.where(on[..., None], character.shade().astype(np.float32), paint)
        img = img * (1 - alpha[..., None]) + paint * alpha[..., None]
        cover = np.maximum(cover, alpha)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(cover, (size, size), interpolation=cv2.INTER_AREA) > 0.5
    return np.clip(img, 0, 1).astype(np.float32), mask


def prompt_for(character: Character, background: Background) -> str:
    """The scene's prompt, e.g. "figure in striped red shirt and blue trousers with yellow cape on checkers
    background" (at most 14 words)."""
    extra = (ACCESSORY_PHRASE.format(colour=character.accessory_name, accessory=character.accessory)
             if character.extended else "")
    return TEMPLATE.format(pattern=character.pattern, shirt=character.shirt_name, trousers=character.trousers_name,
                           accessory=extra, background=background.kind)


def pose_hint(poses: np.ndarray, size: int = SIZE) -> np.ndarray:
    """OpenPose renderings (F, size, size, 3) float32 0..1 of body poses (F, 18, 3) in pixels of a ``size``
    canvas: PATA's ControlNet drawing at 2x, area-downsampled (limbs about 2 pixels wide)."""
    seq = np.array(poses, dtype=np.float64).reshape(-1, 18, 3)
    seq[..., :2] *= 2
    big = render_pose(seq, 2 * size, 2 * size)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in big]).astype(np.float32)


def contrast(character: Character, background: Background) -> float:
    """Smallest RGB distance between a character colour and a background colour (0..sqrt(3))."""
    used = background.colours[:2] if background.kind != "blobs" else background.colours
    colours = character.palette()[:4 if character.extended else 3]  # not the pattern's shade
    return float(min(np.linalg.norm(c - b) for c in colours for b in used))


def sample_scene(rng: np.random.Generator, min_contrast: float = 0.25):
    """A random (character, background) pair whose colours stay apart by ``min_contrast``."""
    while True:
        character, background = Character.sample(rng), Background.sample(rng)
        if contrast(character, background) >= min_contrast:
            return character, background


def make_batch(rng: np.random.Generator, n: int, size: int = SIZE) -> dict:
    """``n`` random training scenes: images (n, size, size, 3), masks, hints (n, size, size, 3), poses
    (n, 18, 3) and prompts (list of str)."""
    images, masks, poses, prompts = [], [], [], []
    for _ in range(n):
        character, background = sample_scene(rng)
        pose = random_pose(rng, character, size)
        img, mask = draw_character(character, pose, background.draw(size))
        images.append(img)
        masks.append(mask)
        poses.append(pose)
        prompts.append(prompt_for(character, background))
    poses = np.stack(poses)
    return {"images": np.stack(images), "masks": np.stack(masks), "hints": pose_hint(poses, size), "poses": poses,
            "prompts": prompts}
