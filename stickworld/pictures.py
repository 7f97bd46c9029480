"""Pictures of StickWorld runs: labelled contact sheets (PNG via OpenCV) and animated GIFs (a small GIF89a
writer in pure Python, so the demo needs nothing beyond the pack's own requirements)."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

LABEL_WIDTH = 78


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def contact_sheet(rows: list[tuple[str, np.ndarray]], scale: int = 3, gap: int = 2) -> np.ndarray:
    """Rows of frames ``(label, (F, H, W, 3) floats 0..1)`` -> one RGB uint8 sheet with the labels on the left.
    Rows may hold different numbers of frames (short rows are left blank on the right)."""
    h, w = rows[0][1].shape[1:3]
    cols = max(len(f) for _, f in rows)
    cell_h, cell_w = h * scale + gap, w * scale + gap
    sheet = np.full((len(rows) * cell_h + gap, LABEL_WIDTH + cols * cell_w + gap, 3), 255, np.uint8)
    for r, (label, frames) in enumerate(rows):
        y = gap + r * cell_h
        cv2.putText(sheet, label, (4, y + cell_h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        for c, frame in enumerate(to_uint8(frames)):
            x = LABEL_WIDTH + gap + c * cell_w
            sheet[y:y + h * scale, x:x + w * scale] = upscale(frame, scale)
    return sheet


def save_png(path, image: np.ndarray) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image[..., ::-1]):
        raise OSError(f"could not write {path}")


# ------------------------------------------------------------------------------------------------- GIF
LEVELS = (6, 7, 6)  # a fixed 252-colour palette: 6 red x 7 green x 6 blue levels


def palette() -> np.ndarray:
    r, g, b = np.meshgrid(*[np.linspace(0, 255, n).round() for n in LEVELS], indexing="ij")
    pal = np.stack([r, g, b], -1).reshape(-1, 3).astype(np.uint8)
    return np.concatenate([pal, np.zeros((256 - len(pal), 3), np.uint8)])


def quantise(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> indices into ``palette()`` (H, W) uint8."""
    q = [np.rint(image[..., i].astype(np.float64) / 255 * (n - 1)).astype(np.int64) for i, n in enumerate(LEVELS)]
    return (q[0] * LEVELS[1] * LEVELS[2] + q[1] * LEVELS[2] + q[2]).astype(np.uint8)


def lzw_encode(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF's variable-length LZW (codes up to 12 bits, a clear code when the table is full)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    acc = nbits = 0
    size = min_code_size + 1

    def emit(code: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    def fresh() -> dict:
        return {bytes([i]): i for i in range(clear)}

    table, next_code = fresh(), end + 1
    emit(clear)
    word = b""
    for value in indices:
        grown = word + bytes([value])
        if grown in table:
            word = grown
            continue
        emit(table[word])
        if next_code < 4096:
            table[grown] = next_code
            next_code += 1
            if next_code > (1 << size) and size < 12:
                size += 1
        else:
            emit(clear)
            table, next_code, size = fresh(), end + 1, min_code_size + 1
        word = bytes([value])
    if word:
        emit(table[word])
    emit(end)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def _sub_blocks(data: bytes) -> bytes:
    parts = [bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)]
    return b"".join(parts) + b"\x00"


def write_gif(path, frames: np.ndarray, fps: float = 8.0, loop: int = 0) -> None:
    """Write RGB frames (F, H, W, 3) uint8 (or floats in 0..1) as an animated GIF looping ``loop`` times
    (0 = forever)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames: expected (F, H, W, 3) RGB frames, got shape {frames.shape}")
    _, h, w, _ = frames.shape
    delay = max(1, int(round(100 / fps)))
    data = bytearray(b"GIF89a")
    data += w.to_bytes(2, "little") + h.to_bytes(2, "little") + bytes([0xF7, 0, 0])
    data += palette().tobytes()
    data += b"\x21\xFF\x0BNETSCAPE2.0\x03\x01" + loop.to_bytes(2, "little") + b"\x00"
    for frame in frames:
        data += b"\x21\xF9\x04\x04" + delay.to_bytes(2, "little") + b"\x00\x00"
        data += b"\x2C" + bytes(4) + w.to_bytes(2, "little") + h.to_bytes(2, "little") + b"\x00"
        data += b"\x08" + _sub_blocks(lzw_encode(quantise(frame).tobytes()))
    data += b"\x3B"
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def plot_loss(steps, losses, path, size=(480, 240)) -> None:
    """Draw a training-loss curve (log scale) as a PNG with OpenCV: steps on x, loss on y."""
    w, h = size
    pad = 40
    img = np.full((h, w, 3), 255, np.uint8)
    steps = np.asarray(steps, np.float64)
    logs = np.log10(np.maximum(np.asarray(losses, np.float64), 1e-12))
    lo, hi = np.floor(logs.min() * 2) / 2, np.ceil(logs.max() * 2) / 2
    hi = hi if hi > lo else lo + 0.5
    xs = pad + (steps - steps.min()) / max(steps.max() - steps.min(), 1) * (w - 1.5 * pad)
    ys = h - pad - (logs - lo) / (hi - lo) * (h - 1.5 * pad)
    cv2.rectangle(img, (pad, pad // 2), (w - pad // 2, h - pad), (200, 200, 200), 1)
    for v in np.arange(lo, hi + 1e-9, 0.5):
        y = int(h - pad - (v - lo) / (hi - lo) * (h - 1.5 * pad))
        cv2.putText(img, f"{10 ** v:.3g}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {int(steps.min())}..{int(steps.max())}, training loss (log)", (pad, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    pts = np.stack([xs, ys], 1).round().astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 60, 30), 1, cv2.LINE_AA)
    save_png(path, img)
