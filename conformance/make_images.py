#!/usr/bin/env python3
"""Generate the conformance fixture set into conformance/images/.

Run with the venv's Python (needs Pillow only):

    conformance/.venv/bin/python conformance/make_images.py

Every image is synthetic and generated deterministically (no randomness without a
fixed seed, fixed encoder settings), so re-running reproduces the same pixels. The
committed files are the reference: recordings.json was made from them, so only
re-run this when you mean to re-record too.

Most pictures are a 3x3 grid of clearly different colours ("the grid"), so that a
crop anchored left/centre/right or top/middle/bottom yields a different 8x8
fingerprint. See README.md for the list.
"""

import io
import os
import random
import shutil
import struct
import sys

from PIL import Image, ImageDraw, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "images")

# 3x3 grid colours: row-major, top-left first. Distinct in hue and lightness.
GRID = [
    [(220, 40, 40), (40, 180, 60), (40, 70, 210)],
    [(240, 220, 40), (200, 50, 200), (40, 200, 210)],
    [(250, 140, 30), (235, 235, 235), (40, 40, 40)],
]


def grid(w, h, marker=True):
    """The 3x3 colour grid at w x h, with a small black disc in the top-left cell
    and a white square in the bottom-right cell, so that flips/rotations are
    distinguishable even where colours are symmetric."""
    im = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(im)
    for r in range(3):
        for c in range(3):
            x0, x1 = c * w // 3, (c + 1) * w // 3
            y0, y1 = r * h // 3, (r + 1) * h // 3
            d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=GRID[r][c])
    if marker and w >= 30 and h >= 30:
        s = max(3, min(w, h) // 12)
        cx, cy = w // 6, h // 6
        d.ellipse([cx - s, cy - s, cx + s, cy + s], fill=(0, 0, 0))
        cx, cy = w - w // 6, h - h // 6
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=(255, 255, 255))
    return im


def save(im, name, **kw):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, **kw)
    return path


# --------------------------------------------------------------------------- ICC
def s15f16(v):
    return struct.pack(">i", int(round(v * 65536)))


def xyz_tag(x, y, z):
    return b"XYZ " + b"\0" * 4 + s15f16(x) + s15f16(y) + s15f16(z)


def curv_gamma(g):
    return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", int(round(g * 256)))


def desc_tag(text):
    a = text.encode("ascii") + b"\0"
    return (
        b"desc" + b"\0" * 4 + struct.pack(">I", len(a)) + a
        + struct.pack(">II", 0, 0)  # unicode language code, count
        + struct.pack(">HB", 0, 0) + b"\0" * 67  # scriptcode code, count, data
    )


def text_tag(text):
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def make_icc_profile():
    """A minimal ICC v2 RGB matrix/TRC display profile with Adobe-RGB(1998)-like
    primaries (D50-adapted colorants) and gamma 2.2. Built byte by byte because
    Pillow's ImageCms can only synthesise sRGB/LAB/XYZ profiles."""
    tags = [
        (b"desc", desc_tag("imgedge conformance wide-gamut RGB (Adobe-like, gamma 2.2)")),
        (b"cprt", text_tag("No copyright, test profile")),
        (b"wtpt", xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz_tag(0.60974, 0.31111, 0.01947)),
        (b"gXYZ", xyz_tag(0.20528, 0.62567, 0.06087)),
        (b"bXYZ", xyz_tag(0.14919, 0.06322, 0.74457)),
        (b"rTRC", curv_gamma(2.2)),
        (b"gTRC", curv_gamma(2.2)),
        (b"bTRC", curv_gamma(2.2)),
    ]
    table_len = 4 + 12 * len(tags)
    offset = 128 + table_len
    table = struct.pack(">I", len(tags))
    data = b""
    for sig, body in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    while len(data) % 4:
        data += b"\0"
    size = 128 + table_len + len(data)
    header = (
        struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ " + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
        + struct.pack(">I", 0) + s15f16(0.9642) + s15f16(1.0) + s15f16(0.8249)
        + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    )
    assert len(header) == 128
    return header + table + data


# ------------------------------------------------------------------------ images
def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    q = dict(quality=85, optimize=True)

    # Plain JPEGs of assorted shapes.
    landscape = grid(600, 400)
    save(landscape, "landscape.jpg", **q)
    save(grid(400, 600), "portrait.jpg", **q)
    save(grid(400, 400), "square.jpg", **q)
    save(grid(1000, 200), "wide.jpg", **q)
    save(grid(20, 15, marker=False), "tiny.jpg", **q)
    save(grid(1600, 1200), "large.jpg", **q)
    save(grid(300, 200).convert("L"), "gray.jpg", **q)
    save(grid(300, 200).convert("CMYK"), "cmyk.jpg", **q)
    # A progressive JPEG (decoder path differs in some libraries).
    save(grid(300, 200), "progressive.jpg", quality=85, progressive=True)

    # EXIF orientation: the *displayed* picture is the 300x200 grid; the stored
    # pixels are rotated/mirrored so that applying the tag yields the grid.
    disp = grid(300, 200)
    stored_for = {
        3: disp.transpose(Image.Transpose.ROTATE_180),
        6: disp.transpose(Image.Transpose.ROTATE_90),
        8: disp.transpose(Image.Transpose.ROTATE_270),
    }
    for orient, stored in stored_for.items():
        exif = Image.Exif()
        exif[0x0112] = orient
        exif[0x010F] = "imgedge-conformance"  # Make, so strip_exif has something to strip
        p = save(stored, f"exif{orient}.jpg", exif=exif.tobytes(), **q)
        with Image.open(p) as check:
            shown = ImageOps.exif_transpose(check)
            assert shown.size == (300, 200), (orient, shown.size)

    # ICC profile (non-sRGB) embedded in a JPEG and a PNG.
    icc = make_icc_profile()
    try:
        from PIL import ImageCms

        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        ImageCms.profileToProfile(grid(30, 20), prof, ImageCms.createProfile("sRGB"))
    except Exception as e:  # pragma: no cover - only if littlecms rejects it
        print("warning: ICC profile did not validate with ImageCms:", e, file=sys.stderr)
    save(grid(300, 200), "icc.jpg", icc_profile=icc, **q)
    save(grid(300, 200), "icc.png", icc_profile=icc, optimize=True)

    # PNGs: RGBA with transparent / semi-transparent regions, palette, LA, 16-bit.
    rgba = grid(300, 200).convert("RGBA")
    alpha = Image.new("L", (300, 200), 255)
    ad = ImageDraw.Draw(alpha)
    ad.rectangle([0, 0, 99, 199], fill=0)  # left third fully transparent
    ad.rectangle([100, 0, 199, 199], fill=128)  # middle third half transparent
    ad.ellipse([220, 60, 280, 140], fill=0)  # a transparent hole on the right
    rgba.putalpha(alpha)
    # Fully transparent pixels get a uniform colour so encoders cannot leak grid data.
    px = rgba.load()
    for y in range(200):
        for x in range(300):
            if px[x, y][3] == 0:
                px[x, y] = (0, 0, 0, 0)
    save(rgba, "alpha.png", optimize=True)
    save(grid(300, 200).quantize(16, method=Image.Quantize.MEDIANCUT), "palette.png", optimize=True)
    pal_t = grid(300, 200).quantize(16, method=Image.Quantize.MEDIANCUT)
    # palette index of the top-left cell becomes transparent (tRNS chunk)
    save(pal_t, "palette_trns.png", transparency=pal_t.getpixel((5, 5)), optimize=True)
    la = grid(300, 200).convert("L").convert("LA")
    la.putalpha(alpha)
    save(la, "gray_alpha.png", optimize=True)
    g16 = Image.new("I;16", (256, 64))
    g16.putdata([x * 257 for y in range(64) for x in range(256)])
    save(g16, "gray16.png")
    save(grid(300, 200), "rgb.png", optimize=True)

    # GIFs: animated (4 frames, different colours and delays) and still.
    frames = []
    for i, col in enumerate([(220, 40, 40), (40, 180, 60), (40, 70, 210), (240, 220, 40)]):
        f = Image.new("RGB", (200, 120), col)
        d = ImageDraw.Draw(f)
        d.rectangle([10 + i * 40, 40, 50 + i * 40, 80], fill=(255, 255, 255))
        d.rectangle([0, 0, 19, 19], fill=(0, 0, 0))
        frames.append(f.quantize(8))
    frames[0].save(
        os.path.join(OUT, "animated.gif"), save_all=True, append_images=frames[1:],
        duration=[100, 200, 300, 400], loop=0, disposal=1, optimize=False,
    )
    save(grid(150, 100).quantize(16), "still.gif")
    # Animated GIF with a transparent background colour.
    tframes = []
    for i in range(3):
        f = Image.new("P", (100, 60), 0)
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
        ImageDraw.Draw(f).ellipse([10 + i * 25, 10, 40 + i * 25, 50], fill=1 + i)
        tframes.append(f)
    tframes[0].save(
        os.path.join(OUT, "animated_alpha.gif"), save_all=True, append_images=tframes[1:],
        duration=150, loop=0, transparency=0, disposal=2,
    )

    # TIFF, WebP (lossy, lossless+alpha, animated), BMP (a format Thumbor does not sniff).
    save(grid(300, 200), "image.tiff", compression="tiff_adobe_deflate")
    save(grid(300, 200), "image.webp", quality=80, method=4)
    save(rgba, "alpha.webp", lossless=True)
    wf = [Image.new("RGB", (120, 80), c) for c in [(220, 40, 40), (40, 180, 60), (40, 70, 210)]]
    wf[0].save(os.path.join(OUT, "animated.webp"), save_all=True, append_images=wf[1:],
               duration=[100, 200, 300], loop=0, lossless=True)
    save(grid(30, 20, marker=False), "image.bmp")

    # Trim fixtures.
    t = Image.new("RGB", (300, 200), (255, 255, 255))
    t.paste(grid(180, 120), (40, 20))  # borders: left 40, top 20, right 80, bottom 60
    save(t, "trim.png", optimize=True)
    save(t, "trim.jpg", quality=90)
    # Border that is "almost" uniform: +-6 grey noise (seeded) around the content.
    rnd = random.Random(1234)
    n = Image.new("RGB", (200, 150))
    n.putdata([(v, v, v) for v in (240 + rnd.randint(-6, 6) for _ in range(200 * 150))])
    n.paste(grid(120, 90, marker=False), (30, 20))  # borders: left 30, top 20, right 50, bottom 40
    save(n, "trim_noisy.png", optimize=True)
    # Two-coloured border: red on the left/top, green on the right/bottom, so trim
    # with the top-left colour and with the bottom-right colour give different boxes.
    tt = Image.new("RGB", (240, 160), (0, 160, 0))
    d = ImageDraw.Draw(tt)
    d.rectangle([0, 0, 239, 24], fill=(200, 0, 0))  # top 25 px red (whole width)
    d.rectangle([0, 0, 29, 159], fill=(200, 0, 0))  # left 30 px red (whole height)
    tt.paste(grid(150, 100, marker=False), (30, 25))  # green right 60, bottom 35
    save(tt, "trim_two.png", optimize=True)
    # Content in the top-left corner, white border on the right and bottom only:
    # trim with the top-left colour (red) finds nothing, with the bottom-right one
    # (white) it keeps the 150x100 content.
    br = Image.new("RGB", (220, 150), (255, 255, 255))
    br.paste(grid(150, 100, marker=False), (0, 0))
    save(br, "trim_br.png", optimize=True)
    # Transparent border around opaque content (trim of an RGBA source).
    ta = Image.new("RGBA", (200, 150), (0, 0, 0, 0))
    ta.paste(grid(100, 80, marker=False).convert("RGBA"), (30, 40))
    save(ta, "trim_alpha.png", optimize=True)
    # Uniform image: trim would remove everything.
    save(Image.new("RGB", (100, 80), (10, 120, 200)), "uniform.png")

    # Overlay images for the watermark() and frame() filters.
    wm = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    d = ImageDraw.Draw(wm)
    d.rounded_rectangle([0, 0, 59, 39], radius=8, fill=(255, 255, 255, 200))
    d.ellipse([20, 10, 40, 30], fill=(0, 0, 255, 255))
    save(wm, "watermark.png", optimize=True)
    fr = Image.new("RGBA", (30, 30), (120, 60, 20, 255))
    ImageDraw.Draw(fr).rectangle([6, 6, 23, 23], fill=(0, 0, 0, 0))
    save(fr, "frame.png", optimize=True)

    # Keys that need escaping, and a nested key.
    src = os.path.join(OUT, "landscape.jpg")
    for key in ["with space.jpg", "plus+sign.jpg", "café.jpg", "sub/dir/x.jpg", "noext"]:
        dst = os.path.join(OUT, key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)

    # Not-an-image and broken inputs.
    with open(os.path.join(OUT, "not_an_image.txt"), "w") as fh:
        fh.write("this is not an image\n")
    with open(src, "rb") as fh:
        data = fh.read()
    with open(os.path.join(OUT, "truncated.jpg"), "wb") as fh:
        fh.write(data[: len(data) // 3])
    open(os.path.join(OUT, "empty.jpg"), "wb").close()

    total = 0
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            size = os.path.getsize(p)
            total += size
            print(f"{os.path.relpath(p, OUT):24s} {size:7d} B")
    print(f"total {total} B")


if __name__ == "__main__":
    main()
