"""Writers of image files for the decoder tests, from the format specifications, for the variants
Pillow cannot write: PNG in every color type and bit depth with chosen filters, Adam7 and tRNS;
BMP with any header, bit depth, bitfields or RLE stream; GIF frames with LZW; baseline JPEG with any
sampling factors, non-interleaved scans, restart intervals and Adobe / JFIF markers.

Everything returns the file's bytes; the tests compare the C++ decoder with Pillow on them.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# ---- PNG -----------------------------------------------------------------------------------------
PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # color type -> samples per pixel
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_row(samples: np.ndarray, depth: int) -> bytes:
    s = samples.reshape(-1).astype(np.int64)
    if depth == 16:
        return s.astype(">u2").tobytes()
    if depth == 8:
        return s.astype(np.uint8).tobytes()
    per = 8 // depth
    s = np.concatenate([s, np.zeros((-len(s)) % per, np.int64)]).reshape(-1, per)
    return (s << np.arange(8 - depth, -1, -depth)[:per]).sum(1).astype(np.uint8).tobytes()


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter(rows: list[bytes], bpp: int, filters: list[int]) -> bytes:
    out, prev = [], np.zeros(len(rows[0]), np.int64)
    for row, f in zip(rows, filters):
        x = np.frombuffer(row, np.uint8).astype(np.int64)
        y = x.copy()
        if f == 2:
            y = x - prev
        else:
            for i in range(len(x)):  # sub, average and Paeth predict from the left byte
                a = x[i - bpp] if i >= bpp else 0
                c = prev[i - bpp] if i >= bpp else 0
                pred = [0, a, 0, (a + prev[i]) // 2, int(_paeth(np.int64(a), prev[i], np.int64(c)))][f]
                y[i] = x[i] - pred
        out.append(bytes([f]) + (y % 256).astype(np.uint8).tobytes())
        prev = x
    return b"".join(out)


def png(samples: np.ndarray, depth: int, color_type: int, *, palette: bytes | None = None, trns: bytes | None = None,
        interlace: bool = False, filters: list[int] | None = None, level: int = 6, idat_size: int = 0) -> bytes:
    """samples: [H, W, samples per pixel] ints in range; filters: per row (cycled), default all 0."""
    h, w, c = samples.shape
    bpp = max(1, c * depth // 8)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    raw, k = b"", 0
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            rows = [_pack_row(r, depth) for r in sub]
            fs = [(filters or [0])[(k + i) % len(filters or [0])] for i in range(len(rows))]
            k += len(rows)
            raw += _filter(rows, bpp, fs)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    if palette is not None:
        out += png_chunk(b"PLTE", palette)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    z = zlib.compress(raw, level)
    step = idat_size or len(z)
    for i in range(0, len(z), step):
        out += png_chunk(b"IDAT", z[i:i + step])
    return out + png_chunk(b"IEND", b"")


# ---- BMP -----------------------------------------------------------------------------------------
def bmp_rows(rows: np.ndarray, bits: int) -> bytes:
    """rows [H, W] palette indices (bits <= 8) or [H, W, bytes] pixel bytes, top row first ->
    bottom-up rows padded to 4 bytes."""
    out = []
    for r in rows[::-1]:
        raw = _pack_row(r, bits) if bits <= 8 else r.astype(np.uint8).tobytes()
        out.append(raw + bytes((-len(raw)) % 4))
    return b"".join(out)


def bmp(width: int, height: int, bits: int, data: bytes, *, palette: list[tuple[int, int, int]] | None = None,
        compression: int = 0, masks: tuple[int, ...] | None = None, header: int = 40, top_down: bool = False,
        colors: int = 0) -> bytes:
    """A BMP file with the given pixel data (as stored), palette [(r, g, b)], info header size."""
    entry = 3 if header == 12 else 4
    pal = b"".join(bytes([b, g, r, 0][:entry]) for r, g, b in palette or [])
    extra = b""
    if header == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        h = (1 << 32) - height if top_down else height
        info = struct.pack("<IiIHHIIiiII", header, width, h, 1, bits, compression, len(data), 2835, 2835, colors, 0)
        m = list(masks or ()) + [0] * 4
        if header > 40:
            info += struct.pack("<IIII", *m[:4])
            info += bytes(header - len(info))
        elif masks is not None:
            extra = struct.pack("<III", *m[:3])
    offset = 14 + len(info) + len(extra) + len(pal)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + extra + pal + data


# ---- GIF -----------------------------------------------------------------------------------------
def lzw(indices: list[int], min_code_size: int) -> bytes:
    """GIF LZW: codes least significant bit first, a clear code first and when the table is full."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    acc = nbits = 0
    out = bytearray()

    def emit(code: int, size: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8

    size, table, nxt = min_code_size + 1, {(i,): i for i in range(clear)}, end + 1
    emit(clear, size)
    w: tuple[int, ...] = ()
    for k in indices:
        if w + (k,) in table:
            w += (k,)
            continue
        emit(table[w], size)
        if nxt < 4096:
            table[w + (k,)] = nxt
            nxt += 1
            if nxt > (1 << size) and size < 12:  # the decoder widens one code later than the encoder
                size += 1
        else:
            emit(clear, size)
            size, table, nxt = min_code_size + 1, {(i,): i for i in range(clear)}, end + 1
        w = (k,)
    if w:
        emit(table[w], size)
    emit(end, size)
    if nbits:
        out.append(acc & 255)
    return bytes(out)


def _color_table(colors: bytes) -> tuple[int, bytes]:
    bits = max(1, (len(colors) // 3 - 1).bit_length())
    return bits - 1, colors + bytes(3 * (1 << bits) - len(colors))


def gif(width: int, height: int, frame: dict, *, global_colors: bytes | None = None) -> bytes:
    """One frame: dict(x, y, w, h, indices, local_colors=None, interlace=False, transparent=None,
    min_code_size=8). Colors are RGB bytes (padded to a power of two entries)."""
    flags, table = 0, b""
    if global_colors is not None:
        size, table = _color_table(global_colors)
        flags = 0x80 | size
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, flags, 0, 0) + table
    if frame.get("transparent") is not None:
        out += b"!\xf9\x04" + bytes([1, 0, 0, frame["transparent"], 0])
    lflags, ltable = 0, b""
    if frame.get("local_colors") is not None:
        size, ltable = _color_table(frame["local_colors"])
        lflags = 0x80 | size
    indices = frame["indices"]
    if frame.get("interlace"):
        lflags |= 0x40
        rows = [indices[y * frame["w"]:(y + 1) * frame["w"]] for y in range(frame["h"])]
        order = [y for start, step in ((0, 8), (4, 8), (2, 4), (1, 2)) for y in range(start, frame["h"], step)]
        indices = [v for y in order for v in rows[y]]
    out += b"," + struct.pack("<HHHHB", frame["x"], frame["y"], frame["w"], frame["h"], lflags) + ltable
    mcs = frame.get("min_code_size", 8)
    data = lzw(list(indices), mcs)
    out += bytes([mcs]) + b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return out + b"\x00;"


# ---- JPEG (baseline, Huffman tables of T.81 Annex K) ----------------------------------------------
ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
                   13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52,
                   45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])
DC_COUNTS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
AC_COUNTS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
AC_SYMBOLS = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435"
    "363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798"
    "999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4"
    "f5f6f7f8f9fa")
_U = np.arange(8)
_DCT = np.sqrt(2 / 8) * np.cos((2 * _U[None, :] + 1) * _U[:, None] * np.pi / 16)
_DCT[0] /= np.sqrt(2)


def _codes(counts: list[int], symbols: bytes) -> dict[int, tuple[int, int]]:
    table, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            table[symbols[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return table


class _Bits:
    def __init__(self) -> None:
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value: int, n: int) -> None:
        for i in range(n - 1, -1, -1):
            self.acc, self.n = (self.acc << 1) | ((value >> i) & 1), self.n + 1
            if self.n == 8:
                self.out += bytes([self.acc, 0]) if self.acc == 0xFF else bytes([self.acc])  # byte stuffing
                self.acc, self.n = 0, 0

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1 bits
        return bytes(self.out)


def jpeg(planes: list[np.ndarray], factors: list[tuple[int, int]], *, quant: int = 4, ids: list[int] | None = None,
         adobe: int | None = None, jfif: bool = True, interleaved: bool = True, restart: int = 0,
         dht: bool = True) -> bytes:
    """Baseline JPEG of full-resolution uint8 planes [H, W], each downsampled by its (h, v) factor."""
    height, width = planes[0].shape
    n = len(planes)
    ids = ids or list(range(1, n + 1))
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    mx, my = -(-width // (8 * hmax)), -(-height // (8 * vmax))
    comps = []
    for p, (h, v) in zip(planes, factors):
        cw, ch = -(-width * h // hmax), -(-height * v // vmax)
        sx, sy = hmax // h, vmax // v
        padded = np.pad(p.astype(float), ((0, (-height) % sy), (0, (-width) % sx)), mode="edge")
        down = padded.reshape(padded.shape[0] // sy, sy, padded.shape[1] // sx, sx).mean((1, 3))[:ch, :cw]
        bw, bh = mx * h, my * v
        full = np.pad(down, ((0, bh * 8 - ch), (0, bw * 8 - cw)), mode="edge") - 128
        coef = np.einsum("ij,abjk,lk->abil", _DCT, full.reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3), _DCT)
        zz = np.round(coef / quant).astype(int).reshape(bh, bw, 64)[..., ZIGZAG]
        comps.append(dict(h=h, v=v, cw=cw, ch=ch, zz=zz))
    dc, ac = _codes(DC_COUNTS, bytes(range(12))), _codes(AC_COUNTS, AC_SYMBOLS)
    out = bytearray(b"\xff\xd8")
    if jfif:
        out += b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    if adobe is not None:
        out += b"\xff\xee\x00\x0eAdobe" + struct.pack(">HHHB", 100, 0, 0, adobe)
    out += b"\xff\xdb\x00\x43\x00" + bytes([quant] * 64)
    out += b"\xff\xc0" + struct.pack(">HBHHB", 8 + 3 * n, 8, height, width, n)
    out += b"".join(bytes([i, (h << 4) | v, 0]) for i, (h, v) in zip(ids, factors))
    if dht:
        out += b"\xff\xc4\x00\x1f\x00" + bytes(DC_COUNTS) + bytes(range(12))
        out += b"\xff\xc4\x00\xb5\x10" + bytes(AC_COUNTS) + AC_SYMBOLS
    if restart:
        out += b"\xff\xdd" + struct.pack(">HH", 4, restart)

    def block(bits: _Bits, zz: np.ndarray, pred: int) -> int:
        diff = int(zz[0]) - pred
        s = abs(diff).bit_length()
        bits.put(*dc[s])
        bits.put(diff if diff >= 0 else diff + (1 << s) - 1, s)
        run, last = 0, max([k for k in range(1, 64) if zz[k]], default=0)
        for k in range(1, last + 1):
            a = int(zz[k])
            if a == 0:
                run += 1
                continue
            while run > 15:
                bits.put(*ac[0xF0])
                run -= 16
            s = abs(a).bit_length()
            bits.put(*ac[(run << 4) | s])
            bits.put(a if a >= 0 else a + (1 << s) - 1, s)
            run = 0
        if last < 63:
            bits.put(*ac[0x00])
        return int(zz[0])

    for scan in ([list(range(n))] if interleaved else [[i] for i in range(n)]):
        out += b"\xff\xda" + struct.pack(">HB", 6 + 2 * len(scan), len(scan))
        out += b"".join(bytes([ids[i], 0]) for i in scan) + b"\x00\x3f\x00"
        if len(scan) > 1:
            units = [(x, y) for y in range(my) for x in range(mx)]
        else:
            c = comps[scan[0]]
            units = [(x, y) for y in range(-(-c["ch"] // 8)) for x in range(-(-c["cw"] // 8))]
        bits, preds = _Bits(), [0] * n
        for i, (ux, uy) in enumerate(units):
            if restart and i and i % restart == 0:
                out += bits.flush() + bytes([0xFF, 0xD0 + (i // restart - 1) % 8])
                bits, preds = _Bits(), [0] * n
            for ci in scan:
                c = comps[ci]
                if len(scan) == 1:
                    preds[ci] = block(bits, c["zz"][uy, ux], preds[ci])
                    continue
                for by in range(c["v"]):
                    for bx in range(c["h"]):
                        preds[ci] = block(bits, c["zz"][uy * c["v"] + by, ux * c["h"] + bx], preds[ci])
        out += bits.flush()
    return bytes(out + b"\xff\xd9")
