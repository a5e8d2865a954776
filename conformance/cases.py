"""The conformance cases: URL paths requested from Thumbor (the oracle) by record.py
and, later, from imgedge by the comparison half of the suite.

Each case is a dict:
    id      short, stable, unique name (never renumber: the comparison keys on it)
    group   a tag for reporting (see GROUPS below)
    path    the exact request path, ASCII, percent-encoded where needed
    headers optional extra request headers
    note    optional: what the case probes / known divergence

`CASES` is the ordered list. Import-time checks reject duplicate ids and
non-ASCII paths. Signed paths are computed here (HMAC-SHA1 of the path after the
signature, base64url with padding, key SECURITY_KEY) so they stay valid when a
case is edited.
"""

import base64
import hashlib
import hmac
from urllib.parse import quote

SECURITY_KEY = "conformance-key"

GROUPS = {
    "resize": "plain resize + centre crop, one side auto, 0, orig, upscale",
    "fit-in": "fit-in / full-fit-in / adaptive-fit-in / adaptive-full-fit-in",
    "align": "horizontal / vertical alignment of the crop",
    "flip": "leading '-' on width and/or height",
    "crop": "manual crop AxB:CxD (normal, zero, out of range, inverted)",
    "trim": "trim[:top-left|:bottom-right][:tolerance]",
    "smart": "smart/ crops (imgedge's detector differs; recorded anyway)",
    "focal": "focal() and extract_focal() filters",
    "filter": "built-in filters with typical and edge arguments",
    "filter-bad": "malformed / out-of-range filter arguments, unknown filters",
    "format": "format() filter and output encoding",
    "source": "every source format and pixel mode",
    "exif": "EXIF orientation sources (RESPECT_ORIENTATION=True)",
    "animated": "animated GIF / WebP sources",
    "meta": "meta/ JSON responses",
    "debug": "debug/ option",
    "signed": "HMAC-SHA1 signed URLs, good and bad",
    "unsafe": "unsafe/ vs bare (unsigned, no unsafe/) forms",
    "key": "file keys needing escaping, nested keys",
    "error": "missing keys, traversal, broken sources, malformed URLs",
    "header": "request headers that must not change the output (AUTO_WEBP off)",
}

CASES = []


def sign(rest):
    """Thumbor's signature of `rest` (the path after '/<signature>/')."""
    mac = hmac.new(SECURITY_KEY.encode(), rest.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(mac).decode()


def add(group, id_, path, note=None, headers=None):
    case = {"id": id_, "group": group, "path": path}
    if headers:
        case["headers"] = headers
    if note:
        case["note"] = note
    CASES.append(case)


def u(group, id_, rest, note=None, headers=None):
    """Add an unsafe/ case: path = /unsafe/<rest>."""
    add(group, id_, "/unsafe/" + rest, note, headers)


def s(group, id_, rest, note=None):
    """Add a correctly signed case: path = /<sig>/<rest>."""
    add(group, id_, "/" + sign(rest) + "/" + rest, note)


L = "landscape.jpg"  # 600x400 grid
P = "portrait.jpg"  # 400x600 grid

# ---------------------------------------------------------------- resize (plain)
for img, tag in ((L, "l"), (P, "p")):
    u("resize", f"resize-orig-{tag}", img, "no options: re-encoded original")
    for size in ["300x200", "200x300", "300x300", "100x100", "600x400", "400x600",
                 "150x50", "50x150", "1200x800", "900x900", "1x1", "1x300", "300x1"]:
        u("resize", f"resize-{size}-{tag}", f"{size}/{img}")
    for size in ["300x0", "0x200", "300x", "x200", "0x0", "x", "1200x0", "0x1200"]:
        name = size.replace("x", "x_") if size.endswith("x") or size.startswith("x") else size
        u("resize", f"resize-{name}-{tag}", f"{size}/{img}")
    for size in ["origx100", "100xorig", "origxorig", "origx0", "0xorig", "origx900"]:
        u("resize", f"resize-{size}-{tag}", f"{size}/{img}")
u("resize", "resize-300x200-wide", "300x200/wide.jpg")
u("resize", "resize-100x100-wide", "100x100/wide.jpg")
u("resize", "resize-100x100-tiny", "100x100/tiny.jpg", "upscale of a 20x15 source")
u("resize", "resize-10x10-tiny", "10x10/tiny.jpg")
u("resize", "resize-300x200-large", "300x200/large.jpg")
u("resize", "resize-0x100-large", "0x100/large.jpg")
u("resize", "resize-3000x2000-l", f"3000x2000/{L}", "5x upscale")
u("resize", "resize-100x100-square", "100x100/square.jpg")
u("resize", "resize-200x100-square", "200x100/square.jpg")

# ------------------------------------------------------------------- fit-in modes
for mode in ["fit-in", "full-fit-in", "adaptive-fit-in", "adaptive-full-fit-in"]:
    for img, tag in ((L, "l"), (P, "p")):
        for size in ["300x300", "200x400", "400x200", "300x0", "0x300", "1000x1000", "600x400",
                     "100x100"]:
            u("fit-in", f"{mode}-{size}-{tag}", f"{mode}/{size}/{img}")
    u("fit-in", f"{mode}-100x100-wide", f"{mode}/100x100/wide.jpg")
    u("fit-in", f"{mode}-100x100-tiny", f"{mode}/100x100/tiny.jpg")
    u("fit-in", f"{mode}-0x0-l", f"{mode}/0x0/{L}", "fit-in without a size")
    u("fit-in", f"{mode}-origx100-l", f"{mode}/origx100/{L}")
u("fit-in", "fit-in-300x300-alpha", "fit-in/300x300/alpha.png")
u("fit-in", "fit-in-100x100-left-top-l", f"fit-in/100x100/left/top/{L}", "alignment has nothing to crop")
u("fit-in", "full-fit-in-100x100-right-bottom-l", f"full-fit-in/100x100/right/bottom/{L}")

# ---------------------------------------------------------------------- alignment
for img, tag in ((L, "l"), (P, "p")):
    for h in ["left", "center", "right"]:
        u("align", f"align-100x300-{h}-{tag}", f"100x300/{h}/{img}")
    for v in ["top", "middle", "bottom"]:
        u("align", f"align-300x100-{v}-{tag}", f"300x100/{v}/{img}")
    for h in ["left", "center", "right"]:
        for v in ["top", "middle", "bottom"]:
            u("align", f"align-100x100-{h}-{v}-{tag}", f"100x100/{h}/{v}/{img}")
    # alignment on the axis that is not cropped
    u("align", f"align-300x100-left-{tag}", f"300x100/left/{img}")
    u("align", f"align-100x300-top-{tag}", f"100x300/top/{img}")
u("align", "align-100x100-left-wide", "100x100/left/wide.jpg")
u("align", "align-100x100-right-wide", "100x100/right/wide.jpg")
u("align", "align-300x0-left-l", f"300x0/left/{L}", "one side auto: nothing to crop")
u("align", "align-origx100-bottom-l", f"origx100/bottom/{L}")
u("align", "align-100xorig-right-l", f"100xorig/right/{L}")

# ---------------------------------------------------------------------------- flip
for img, tag in ((L, "l"), (P, "p")):
    for size in ["-300x200", "300x-200", "-300x-200", "-0x0", "0x-0", "-0x-0", "-x-", "-300x0"]:
        u("flip", f"flip-{size}-{tag}", f"{size}/{img}")
u("flip", "flip--100x300-left-l", f"-100x300/left/{L}", "flip and alignment")
u("flip", "flip-300x-100-top-l", f"300x-100/top/{L}")
u("flip", "flip-fit-in--300x-300-l", f"fit-in/-300x-300/{L}")
u("flip", "flip-full-fit-in--100x100-p", f"full-fit-in/-100x100/{P}")
u("flip", "flip--origx-orig-l", f"-origx-orig/{L}")
u("flip", "flip--300x-200-alpha", "-300x-200/alpha.png")

# ----------------------------------------------------------------- manual crops
crops = {
    "normal": "100x50:500x350",
    "zero": "0x0:0x0",
    "topleft": "0x0:300x200",
    "bottomright": "300x200:600x400",
    "partly-out": "500x300:900x900",
    "fully-out": "700x500:800x600",
    "inverted": "500x350:100x50",
    "inverted-x": "500x50:100x350",
    "empty-area": "100x100:100x100",
    "one-px": "10x10:11x11",
    "whole": "0x0:600x400",
}
for name, box in crops.items():
    u("crop", f"crop-{name}-l", f"{box}/{L}")
    u("crop", f"crop-{name}-200x200-l", f"{box}/200x200/{L}")
u("crop", "crop-normal-fit-in-100x100-l", f"100x50:500x350/fit-in/100x100/{L}")
u("crop", "crop-normal-300x100-top-l", f"100x50:500x350/300x100/top/{L}")
u("crop", "crop-normal-flip-l", f"100x50:500x350/-200x-200/{L}")
u("crop", "crop-normal-p", f"50x100:350x500/{P}")
u("crop", "crop-normal-100x0-p", f"50x100:350x500/100x0/{P}")
u("crop", "crop-exif6", "0x0:150x100/exif6.jpg", "box in oriented (displayed) coordinates?")
u("crop", "crop-animated", "10x10:110x90/animated.gif")

# --------------------------------------------------------------------------- trim
for opt in ["trim", "trim:top-left", "trim:bottom-right", "trim:10", "trim:top-left:10",
            "trim:bottom-right:50", "trim:442"]:
    u("trim", f"{opt.replace(':', '-')}-png", f"{opt}/trim.png")
# Note: Thumbor 7.8 reads "trim:N" as position N with tolerance 0; a tolerance
# only takes effect in the three-part form trim:top-left:N / trim:bottom-right:N.
for opt in ["trim", "trim:5", "trim:20", "trim:60", "trim:top-left:5", "trim:top-left:20",
            "trim:top-left:60", "trim:bottom-right:20"]:
    u("trim", f"{opt.replace(':', '-')}-jpg", f"{opt}/trim.jpg", "JPEG artefacts in the border")
for opt in ["trim", "trim:10", "trim:20", "trim:top-left:5", "trim:top-left:10", "trim:top-left:20",
            "trim:top-left:40", "trim:top-left:100"]:
    u("trim", f"{opt.replace(':', '-')}-noisy", f"{opt}/trim_noisy.png", "border noise +-6")
for opt in ["trim", "trim:top-left", "trim:bottom-right", "trim:bottom-right:30"]:
    u("trim", f"{opt.replace(':', '-')}-two", f"{opt}/trim_two.png", "red top/left, green right/bottom")
for opt in ["trim", "trim:top-left", "trim:bottom-right", "trim:bottom-right:10"]:
    u("trim", f"{opt.replace(':', '-')}-br", f"{opt}/trim_br.png", "white border on right/bottom only")
u("trim", "trim-alpha", "trim/trim_alpha.png", "transparent border")
u("trim", "trim-uniform", "trim/uniform.png", "everything is border")
u("trim", "trim-landscape", f"trim/{L}", "no border")
u("trim", "trim-crop-png", "trim/10x10:200x150/trim.png", "trim then manual crop")
u("trim", "trim-fit-in-png", "trim/fit-in/100x100/trim.png")
u("trim", "trim-100x100-png", "trim/100x100/trim.png")
u("trim", "trim-100x100-left-png", "trim/100x100/left/trim.png")
u("trim", "trim-animated", "trim/animated.gif")
u("trim", "trim-exif6", "trim/exif6.jpg")
u("trim", "trim-bad-corner", "trim:top-right/trim.png", "not an option value: part of the key?")
u("trim", "trim-bad-tol", "trim:abc/trim.png")

# -------------------------------------------------------------------------- smart
for img, tag in ((L, "l"), (P, "p")):
    for size in ["100x100", "300x100", "100x300"]:
        u("smart", f"smart-{size}-{tag}", f"{size}/smart/{img}")
u("smart", "smart-100x100-left-top-l", f"100x100/left/top/smart/{L}", "smart wins over alignment?")
u("smart", "smart-fit-in-l", f"fit-in/100x100/smart/{L}")
u("smart", "smart-100x100-wide", "100x100/smart/wide.jpg")
u("smart", "smart-trim", "trim/100x100/smart/trim.png")
u("smart", "smart-focal-l", f"100x100/smart/filters:focal(400x0:600x130)/{L}")
u("smart", "smart-animated", "50x50/smart/animated.gif")

# -------------------------------------------------------------------------- focal
u("focal", "focal-topleft-l", f"200x200/filters:focal(0x0:100x100)/{L}")
u("focal", "focal-right-l", f"200x200/filters:focal(500x100:600x300)/{L}")
u("focal", "focal-bottomright-l", f"100x100/filters:focal(500x300:600x400)/{L}")
u("focal", "focal-bottom-p", f"300x100/filters:focal(0x500:400x600)/{P}")
u("focal", "focal-top-p", f"300x100/filters:focal(0x0:400x50)/{P}")
u("focal", "focal-two-l", f"200x200/filters:focal(0x0:50x50):focal(550x350:600x400)/{L}",
  "two focal filters: the centre of mass")
u("focal", "focal-three-l", f"150x300/filters:focal(0x0:10x10):focal(0x390:10x400):focal(590x0:600x10)/{L}")
u("focal", "focal-out-of-range-l", f"200x200/filters:focal(900x900:1000x1000)/{L}")
u("focal", "focal-zero-area-l", f"200x200/filters:focal(100x100:100x100)/{L}", "ignored: no area")
u("focal", "focal-inverted-l", f"200x200/filters:focal(500x300:100x100)/{L}")
u("focal", "focal-fit-in-l", f"fit-in/200x200/filters:focal(0x0:100x100)/{L}", "nothing to crop")
u("focal", "focal-alignment-l", f"200x200/right/filters:focal(0x0:100x100)/{L}", "focal wins?")
u("focal", "focal-bad-l", f"200x200/filters:focal(abc)/{L}")
u("focal", "focal-empty-l", f"200x200/filters:focal()/{L}")
u("focal", "extract-focal-l", f"300x300/filters:extract_focal()/thumbor.local/unsafe/400x0:600x130/{L}",
  "focal box taken from an embedded Thumbor URL (7.8: the ':' is re-quoted, so the key is not found)")
u("focal", "extract-focal-nocrop-l", f"300x300/filters:extract_focal()/{L}", "no embedded URL: no-op")

# ------------------------------------------------------------------------ filters
def f(id_, flt, img=L, prefix="fit-in/300x200", group="filter", note=None):
    rest = f"{prefix}/filters:{flt}/{img}" if prefix else f"filters:{flt}/{img}"
    u(group, id_, rest, note)


for q in ["1", "10", "50", "95", "100"]:
    f(f"quality-{q}", f"quality({q})")
f("quality-webp-30", "quality(30):format(webp)")
f("quality-png-10", "quality(10)", img="rgb.png", note="quality on PNG output")
for b in ["1", "5", "5,2", "20", "500", "3,0"]:
    f(f"blur-{b.replace(',', '-')}", f"blur({b})")
f("blur-alpha", "blur(5)", img="alpha.png")
for a in ["1.5,1,true", "2,2,false", "0,0,true", "10,5,true", "0.5,0.5,false"]:
    f(f"sharpen-{a.replace(',', '-')}", f"sharpen({a})")
f("grayscale", "grayscale()")
f("grayscale-alpha", "grayscale()", img="alpha.png")
f("grayscale-gray", "grayscale()", img="gray.jpg")
for v in ["30", "-50", "100", "-100", "0"]:
    f(f"brightness-{v}", f"brightness({v})")
for v in ["40", "-40", "100", "-100", "0"]:
    f(f"contrast-{v}", f"contrast({v})")
for v in ["20,-20,0", "100,100,100", "-100,-100,-100", "0,0,0"]:
    f(f"rgb-{v}", f"rgb({v})")
f("rgb-alpha", "rgb(50,0,0)", img="alpha.png")
for v in ["0", "0.5", "1", "2", "-1"]:
    f(f"saturation-{v}", f"saturation({v})")
f("equalize", "equalize()")
f("equalize-gray", "equalize()", img="gray.jpg")
for v in ["20", "50,1", "0", "100,7"]:
    f(f"noise-{v.replace(',', '-')}", f"noise({v})")
for v in ["0", "90", "180", "270", "360", "450", "-90", "45", "30"]:
    f(f"rotate-{v}", f"rotate({v})")
f("rotate-45-alpha", "rotate(45)", img="alpha.png", note="non-right angle on an RGBA source")
f("rotate-90-crop", "rotate(90)", prefix="300x100", note="rotate after a crop to 300x100")
f("stretch-plain", "stretch()", prefix="300x300", note="stretch without fit-in")
f("stretch-fit-in", "stretch()", prefix="fit-in/300x300")
f("stretch-full-fit-in", "stretch()", prefix="full-fit-in/300x300")
f("stretch-fit-in-one-side", "stretch()", prefix="fit-in/300x0")
f("convolution-blur", "convolution(1;2;1;2;4;2;1;2;1,3,true)")
f("convolution-edge", "convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)")
f("convolution-1x1", "convolution(1,1,false)")
f("convolution-5", "convolution(1;1;1;1;1,5,true)", note="one row of 5")
f("curve-identity", "curve([(0,0),(255,255)],[(0,0),(255,255)],[(0,0),(255,255)],[(0,0),(255,255)])")
f("curve-lift", "curve([(0,0),(255,255)],[(0,60),(255,255)],[(0,0),(128,200),(255,255)],[(0,0),(255,180)])")
f("curve-empty", "curve([],[],[],[])")
f("colorize-red", "colorize(100,0,0,ff0000)")
f("colorize-mix", "colorize(40,80,20,00ff00)")
for c in ["red", "ff0000", "f00", "00ff00ff", "transparent", "auto", "blur", "white", "000000"]:
    f(f"fill-{c}", f"fill({c})", prefix="fit-in/300x300")
f("fill-red-true-alpha", "fill(red,true)", img="alpha.png", prefix="fit-in/400x400")
f("fill-red-false-alpha", "fill(red,false)", img="alpha.png", prefix="fit-in/400x400")
f("fill-red-1-alpha", "fill(red,1)", img="alpha.png", prefix="fit-in/400x400")
f("fill-transparent-png", "fill(transparent):format(png)", prefix="fit-in/300x300")
f("fill-transparent-alpha", "fill(transparent)", img="alpha.png", prefix="fit-in/400x400")
f("fill-auto-p", "fill(auto)", img=P, prefix="fit-in/300x300")
f("fill-blur-p", "fill(blur)", img=P, prefix="fit-in/300x300")
f("fill-plain-crop", "fill(red)", prefix="300x300", note="nothing to fill after a crop")
f("fill-full-fit-in", "fill(red)", prefix="full-fit-in/300x300")
f("fill-no-size", "fill(red)", prefix=None)
for c in ["red", "auto", "00ff00", "blue"]:
    f(f"background-color-{c}-alpha", f"background_color({c})", img="alpha.png")
    f(f"background-color-{c}-alpha-jpeg", f"background_color({c}):format(jpeg)", img="alpha.png")
f("background-color-red-l", "background_color(red)", note="opaque source: no effect")
f("background-color-red-palette", "background_color(red)", img="palette_trns.png")
f("no-upscale-plain", "no_upscale()", prefix="1200x800")
f("no-upscale-fit-in", "no_upscale()", prefix="fit-in/1200x1200")
f("no-upscale-one-side", "no_upscale()", prefix="1200x0")
f("no-upscale-tiny", "no_upscale()", img="tiny.jpg", prefix="100x100")
f("upscale-fit-in", "upscale()", prefix="fit-in/1200x1200")
f("upscale-full-fit-in", "upscale()", prefix="full-fit-in/1200x1200")
f("upscale-adaptive", "upscale()", prefix="adaptive-fit-in/1200x1500")
f("upscale-tiny", "upscale()", img="tiny.jpg", prefix="fit-in/100x100")
f("upscale-plain", "upscale()", prefix="1200x0")
f("strip-exif-exif6", "strip_exif()", img="exif6.jpg", prefix=None)
f("strip-exif-l", "strip_exif()", prefix=None)
f("strip-icc-icc", "strip_icc()", img="icc.jpg", prefix=None)
f("strip-icc-icc-png", "strip_icc()", img="icc.png", prefix=None)
for n in ["100000", "5000", "2000", "100"]:
    f(f"max-bytes-{n}", f"max_bytes({n})", prefix=None)
f("max-bytes-png", "max_bytes(500)", img="rgb.png", prefix=None)
f("max-bytes-webp", "max_bytes(600):format(webp)", prefix=None)
for a in ["20,255,255,255", "20|40,0,0,0", "30,0,0,0,1", "30,0,0,0,true", "500,255,0,0", "0,0,0,0"]:
    f(f"round-corner-{a.replace(',', '-').replace('|', '_')}", f"round_corner({a})")
f("round-corner-transparent-png", "round_corner(30,0,0,0,1):format(png)")
f("round-corner-alpha", "round_corner(40,255,0,0)", img="alpha.png")
for v in ["0.5", "0.1", "1", "1.0", "0", "1.5", "0.001"]:
    f(f"proportion-{v}", f"proportion({v})")
f("proportion-plain", "proportion(0.5)", prefix="300x300")
f("proportion-no-size", "proportion(0.5)", prefix=None)
for a, tag in [("watermark.png,10,10,50", "tl"), ("watermark.png,-10,-10,0", "br"),
               ("watermark.png,center,center,30", "center"), ("watermark.png,repeat,repeat,0", "repeat"),
               ("watermark.png,50p,50p,0,20,20", "pct"), ("watermark.png,0,0,100", "alpha100"),
               ("watermark.png,20,20,0,none,50", "hratio"), ("sub/dir/x.jpg,0,0,0,30,30", "jpeg")]:
    f(f"watermark-{tag}", f"watermark({a})")
f("watermark-missing", "watermark(missing.png,10,10,0)", note="watermark image not found")
f("watermark-alpha-source", "watermark(watermark.png,0,0,0)", img="alpha.png")
f("frame", "frame(frame.png)", prefix="fit-in/200x200")
f("frame-missing", "frame(missing.png)", prefix="fit-in/200x200")
f("max-age-60", "max_age(60)")
f("max-age-0", "max_age(0)")
f("chain-1", "quality(50):grayscale():brightness(20)")
f("chain-2", "blur(2):sharpen(2,1,true):contrast(20):format(png)")
f("chain-3", "fill(blue):rotate(90):round_corner(10,255,255,255)", prefix="fit-in/300x300")
f("chain-repeated", "brightness(20):brightness(20)")
f("chain-format-last-wins", "format(png):format(webp)")
f("chain-quality-last-wins", "quality(10):quality(90)")

# ---------------------------------------------------------------- bad filter args
bad = [
    ("quality-0", "quality(0)"), ("quality-150", "quality(150)"), ("quality-neg", "quality(-5)"),
    ("quality-abc", "quality(abc)"), ("quality-empty", "quality()"), ("quality-float", "quality(80.5)"),
    ("quality-auto", "quality(auto)"), ("quality-2-args", "quality(80,90)"),
    ("blur-0", "blur(0)"), ("blur-neg", "blur(-2)"), ("blur-abc", "blur(abc)"),
    ("brightness-200", "brightness(200)"), ("brightness-abc", "brightness(abc)"),
    ("brightness-float", "brightness(1.5)"), ("contrast-200", "contrast(200)"),
    ("rgb-2-args", "rgb(10,10)"), ("rotate-abc", "rotate(abc)"), ("rotate-float", "rotate(90.0)"),
    ("fill-hash", "fill(%23ff0000)"), ("fill-notacolor", "fill(notacolor)"), ("fill-empty", "fill()"),
    ("format-bmp", "format(bmp)"), ("format-empty", "format()"), ("format-upper", "format(PNG)"),
    ("sharpen-1-arg", "sharpen(2)"), ("sharpen-bad-bool", "sharpen(2,1,maybe)"),
    ("round-corner-1-arg", "round_corner(20)"), ("colorize-bad-hex", "colorize(10,10,10,zzzzzz)"),
    ("colorize-short-hex", "colorize(10,10,10,f00)"),
    ("convolution-bad-columns", "convolution(1;2;1;2,3,true)"), ("convolution-zero-cols", "convolution(1;2;1,0,true)"),
    ("curve-bad", "curve(abc)"), ("noise-neg", "noise(-5)"), ("proportion-abc", "proportion(abc)"),
    ("max-bytes-0", "max_bytes(0)"), ("max-bytes-abc", "max_bytes(abc)"), ("max-age-neg", "max_age(-1)"),
    ("unknown", "foo(1)"), ("unknown-no-parens", "foo"), ("autojpg", "autojpg()"), ("red-eye", "red_eye()"),
    ("no-parens", "grayscale"), ("missing-close", "quality(80"), ("double-colon", "quality(80)::grayscale()"),
    ("trailing-colon", "quality(80):"), ("space-in-args", "quality(%2080)"),
    ("upper-name", "QUALITY(80)"), ("grayscale-arg", "grayscale(1)"), ("equalize-arg", "equalize(1)"),
]
for name, flt in bad:
    f(f"bad-{name}", flt, group="filter-bad")
u("filter-bad", "bad-empty-filters", f"filters:/{L}", "empty filter list")
u("filter-bad", "bad-empty-filters-sized", f"fit-in/300x200/filters:/{L}")
u("filter-bad", "bad-filters-no-colon", f"filters/{L}")

# ------------------------------------------------------------------ output format
for fmt in ["jpeg", "jpg", "png", "webp", "gif", "avif", "heic", "heif"]:
    f(f"format-{fmt}-l", f"format({fmt})", group="format",
      note="no AVIF/HEIF plugin installed" if fmt in ("avif", "heic", "heif") else None)
for fmt in ["jpeg", "png", "webp", "gif"]:
    f(f"format-{fmt}-alpha", f"format({fmt})", img="alpha.png", group="format")
    f(f"format-{fmt}-palette", f"format({fmt})", img="palette_trns.png", group="format")
    f(f"format-{fmt}-gray", f"format({fmt})", img="gray.jpg", group="format")
f("format-webp-quality-100", "format(webp):quality(100)", group="format")
f("format-png-icc", "format(png)", img="icc.jpg", group="format", prefix=None)
f("format-webp-large", "format(webp)", img="large.jpg", group="format", prefix=None)

# ------------------------------------------------------------------ source formats
sources = ["landscape.jpg", "portrait.jpg", "square.jpg", "wide.jpg", "tiny.jpg", "large.jpg",
           "gray.jpg", "cmyk.jpg", "progressive.jpg", "icc.jpg", "icc.png", "alpha.png",
           "palette.png", "palette_trns.png", "gray_alpha.png", "gray16.png", "rgb.png",
           "still.gif", "image.tiff", "image.webp", "alpha.webp", "noext"]
for src in sources:
    tag = src.replace(".", "-")
    if src not in (L, P):
        u("source", f"src-{tag}", src)
    u("source", f"src-{tag}-fit-in-100", f"fit-in/100x100/{src}")
u("source", "src-cmyk-png", "filters:format(png)/cmyk.jpg")
u("source", "src-gray16-jpeg", "filters:format(jpeg)/gray16.png")
u("source", "src-tiff-100x100", "100x100/image.tiff")
u("source", "src-alpha-100x100", "100x100/alpha.png")

# ----------------------------------------------------------------------------- EXIF
for o in ["3", "6", "8"]:
    img = f"exif{o}.jpg"
    u("exif", f"exif{o}", img)
    u("exif", f"exif{o}-fit-in-100", f"fit-in/100x100/{img}")
    u("exif", f"exif{o}-100x100-left-top", f"100x100/left/top/{img}")
    u("exif", f"exif{o}-150x0", f"150x0/{img}")
    u("exif", f"exif{o}-flip", f"-150x-100/{img}")
u("exif", "exif6-no-upscale", "fit-in/1000x1000/filters:no_upscale()/exif6.jpg")
u("exif", "exif6-png", "filters:format(png)/exif6.jpg")

# ------------------------------------------------------------------------- animated
A = "animated.gif"
u("animated", "anim-orig", A)
u("animated", "anim-fit-in-100", f"fit-in/100x100/{A}")
u("animated", "anim-50x50", f"50x50/{A}")
u("animated", "anim-flip", f"-100x-60/{A}")
u("animated", "anim-webp", f"filters:format(webp)/{A}")
u("animated", "anim-fit-in-webp", f"fit-in/100x100/filters:format(webp)/{A}")
u("animated", "anim-png", f"filters:format(png)/{A}", "first frame only?")
u("animated", "anim-jpeg", f"filters:format(jpeg)/{A}")
u("animated", "anim-grayscale", f"fit-in/100x100/filters:grayscale()/{A}")
u("animated", "anim-rotate-90", f"filters:rotate(90)/{A}")
u("animated", "anim-blur", f"fit-in/100x100/filters:blur(2)/{A}")
u("animated", "anim-fill", f"fit-in/150x150/filters:fill(red)/{A}")
u("animated", "anim-alpha", "animated_alpha.gif")
u("animated", "anim-alpha-fit-in", "fit-in/50x50/animated_alpha.gif")
u("animated", "anim-alpha-webp", "filters:format(webp)/animated_alpha.gif")
u("animated", "anim-webp-src", "animated.webp", "animated WebP source")
u("animated", "anim-webp-src-fit-in", "fit-in/60x60/animated.webp")
u("animated", "anim-webp-src-gif", "filters:format(gif)/animated.webp")
u("animated", "still-gif-fit-in", "fit-in/100x100/still.gif")
u("animated", "still-gif-webp", "filters:format(webp)/still.gif")

# ----------------------------------------------------------------------------- meta
for rest, tag in [(L, "orig"), (f"300x200/{L}", "300x200"), (f"fit-in/300x200/{L}", "fit-in"),
                  (f"full-fit-in/300x200/{L}", "full-fit-in"), (f"adaptive-fit-in/200x300/{L}", "adaptive"),
                  (f"-300x-200/{L}", "flip"), (f"100x50:500x350/200x200/{L}", "crop"),
                  (f"100x100/right/bottom/{L}", "align"), (f"100x100/smart/{L}", "smart"),
                  (f"300x200/filters:quality(50):rotate(90)/{L}", "filters"),
                  (f"200x200/filters:focal(0x0:100x100)/{L}", "focal"),
                  ("trim/trim.png", "trim"), ("fit-in/100x100/animated.gif", "animated"),
                  ("exif6.jpg", "exif6"), ("fit-in/300x300/filters:fill(red)/alpha.png", "fill"),
                  ("nope.jpg", "missing")]:
    u("meta", f"meta-{tag}", f"meta/{rest}")

# ---------------------------------------------------------------------------- debug
u("debug", "debug-100x100-l", f"debug/100x100/{L}")
u("debug", "debug-focal-l", f"debug/200x200/filters:focal(0x0:100x100)/{L}")

# --------------------------------------------------------------------------- signed
for rest, tag in [(L, "orig"), (f"300x200/{L}", "300x200"), (f"fit-in/300x200/filters:quality(50)/{L}", "filters"),
                  (f"meta/fit-in/300x200/{L}", "meta"), ("sub/dir/x.jpg", "nested"),
                  (quote("café.jpg"), "non-ascii"), ("with%20space.jpg", "space"),
                  (f"trim/100x50:500x350/-200x200/left/top/smart/filters:grayscale()/{L}", "everything")]:
    s("signed", f"signed-{tag}", rest)
good = sign(f"300x200/{L}")
add("signed", "signed-wrong-path", f"/{good}/300x201/{L}", "signature of another path")
add("signed", "signed-wrong-key", "/" + base64.urlsafe_b64encode(
    hmac.new(b"other-key", f"300x200/{L}".encode(), hashlib.sha1).digest()).decode() + f"/300x200/{L}")
add("signed", "signed-truncated", f"/{good[:-1]}/300x200/{L}")
add("signed", "signed-no-padding", f"/{good.rstrip('=')}/300x200/{L}")
# a path whose signature uses the URL-safe characters '-' or '_' (so that the
# standard alphabet, '+' and '/', gives a different string)
_w = next(w for w in range(300, 400) if set(sign(f"{w}x200/{L}")) & set("-_"))
_std = base64.b64encode(hmac.new(SECURITY_KEY.encode(), f"{_w}x200/{L}".encode(), hashlib.sha1).digest()).decode()
s("signed", "signed-urlsafe-chars", f"{_w}x200/{L}", "signature contains '-' or '_'")
add("signed", "signed-std-base64", "/" + _std.replace("/", "%2F") + f"/{_w}x200/{L}",
    "standard alphabet ('+', '/' sent as %2F) instead of URL-safe")
add("signed", "signed-plus-unsafe", f"/{good}/unsafe/300x200/{L}", "both a signature and unsafe/")
add("signed", "signed-of-unsafe", "/" + sign(f"unsafe/300x200/{L}") + f"/unsafe/300x200/{L}",
    "signature covers 'unsafe/...'")
add("signed", "signed-garbage", f"/AAAAAAAAAAAAAAAAAAAAAAAAAAA=/300x200/{L}")
add("signed", "signed-leading-slash", "/" + sign(f"/300x200/{L}") + f"/300x200/{L}",
    "signature computed with a leading slash")

# ---------------------------------------------------------------- unsafe and bare
u("unsafe", "unsafe-orig", L)
u("unsafe", "unsafe-300x200", f"300x200/{L}")
add("unsafe", "bare-orig", f"/{L}", "imgedge accepts bare keys; Thumbor needs unsafe/ or a signature")
add("unsafe", "bare-300x200", f"/300x200/{L}")
add("unsafe", "bare-fit-in", f"/fit-in/300x200/{L}")
add("unsafe", "bare-filters", f"/filters:quality(50)/{L}")
add("unsafe", "unsafe-upper", f"/UNSAFE/300x200/{L}")
add("unsafe", "unsafe-twice", f"/unsafe/unsafe/300x200/{L}")
add("unsafe", "unsafe-no-slash-prefix", f"unsafe/300x200/{L}", "request path without a leading '/'")

# -------------------------------------------------------------------------- keys
u("key", "key-space-pct", "with%20space.jpg")
u("key", "key-space-sized", "fit-in/100x100/with%20space.jpg")
u("key", "key-plus-raw", "plus+sign.jpg")
u("key", "key-plus-pct", "plus%2Bsign.jpg")
u("key", "key-cafe", quote("café.jpg"))
u("key", "key-cafe-sized", "100x100/" + quote("café.jpg"))
u("key", "key-cafe-nfd", quote("cafe\u0301.jpg"), "decomposed e + combining acute: a different key")
u("key", "key-nested", "sub/dir/x.jpg")
u("key", "key-nested-sized", "fit-in/100x100/sub/dir/x.jpg")
u("key", "key-nested-encoded-slash", "sub%2Fdir%2Fx.jpg")
u("key", "key-noext", "noext")
u("key", "key-pct-letters", "%6Candscape.jpg", "percent-encoded plain letter")
u("key", "key-looks-like-option", "100x100/sub/dir/x.jpg")
u("key", "key-query", f"{L}?foo=bar", "query string is not part of the key")
u("key", "key-fragment-pct", f"{L}%23frag")
u("key", "key-upper-ext", "LANDSCAPE.JPG", "case-sensitive file system")

# ------------------------------------------------------------------------- errors
u("error", "err-missing", "nope.jpg")
u("error", "err-missing-sized", "fit-in/100x100/nope.jpg")
u("error", "err-missing-nested", "sub/dir/nope.jpg")
u("error", "err-missing-dir", "sub/dir")
u("error", "err-dotdot", "../cases.py")
u("error", "err-dotdot-inner", f"sub/../{L}")
u("error", "err-dotdot-pct", "%2E%2E/cases.py")
u("error", "err-dotdot-deep", "../../../../etc/passwd")
u("error", "err-dot-segment", f"./{L}")
u("error", "err-double-slash", "sub//dir/x.jpg")
u("error", "err-absolute", "/etc/passwd")
u("error", "err-backslash", "sub%5Cdir%5Cx.jpg")
u("error", "err-nul", f"{L}%00.jpg")
u("error", "err-control", "land%0Ascape.jpg")
u("error", "err-no-key", "")
u("error", "err-no-key-sized", "300x200/")
u("error", "err-only-options", "300x200")
u("error", "err-not-image", "not_an_image.txt")
u("error", "err-truncated", "truncated.jpg")
u("error", "err-truncated-sized", "fit-in/100x100/truncated.jpg")
u("error", "err-empty-file", "empty.jpg")
u("error", "err-bmp", "image.bmp", "format Thumbor does not sniff")
u("error", "err-bad-size", f"300x20o/{L}", "malformed size becomes part of the key")
u("error", "err-bad-fit", f"fit-on/300x200/{L}")
u("error", "err-bad-align", f"300x200/middle/left/{L}", "valign before halign")
u("error", "err-order", f"filters:quality(50)/300x200/{L}", "options after filters")
u("error", "err-huge", f"10000x10000/{L}", "very large output (no MAX_WIDTH set)")
add("error", "err-root", "/")
add("error", "err-healthcheck", "/healthcheck", "Thumbor's health route")

# ------------------------------------------------------------------------ headers
u("header", "accept-webp", f"fit-in/300x200/{L}", headers={"Accept": "image/webp,*/*"},
  note="AUTO_WEBP=False: stays JPEG")
u("header", "accept-avif", f"fit-in/300x200/{L}", headers={"Accept": "image/avif,image/webp,*/*"})
u("header", "accept-webp-png", "fit-in/300x200/alpha.png", headers={"Accept": "image/webp"})


# --------------------------------------------------------------------------- checks
def _check():
    seen = set()
    for c in CASES:
        assert c["id"] not in seen, "duplicate id " + c["id"]
        seen.add(c["id"])
        assert c["group"] in GROUPS, c
        c["path"].encode("ascii")


_check()

if __name__ == "__main__":
    from collections import Counter

    for g, n in sorted(Counter(c["group"] for c in CASES).items()):
        print(f"{g:12s} {n}")
    print("total", len(CASES))
