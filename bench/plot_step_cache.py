#!/usr/bin/env python3
"""Speedup against PSNR for bench/step_cache_cpu.sh's tables, drawn with PIL.

    plot_step_cache.py OUT.png "demo model=demo.md" "small preset=small.md"

Each TITLE=FILE argument is one panel: FILE holds the Markdown table that
bench/step_cache_cpu.sh printed. x is the image's PSNR against the same
configuration uncached (rows whose image is identical sit at the right
edge, marked "identical"), y the denoising speedup; one colour per parallel method,
circles for First-Block-Cache and squares for TeaCache, the threshold next
to each point. The shaded corner is issue 21's target (>= 1.8x at >= 30 dB).
Uncached rows (1.00x, identical by definition) are left out.
"""
import sys

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"serial": (31, 119, 180), "u2": (255, 127, 14), "r2": (44, 160, 44),
           "cfg2": (214, 39, 40), "pf2": (148, 103, 189)}
X_MIN, X_MAX, IDENTICAL_X = 15.0, 62.0, 60.0
Y_MIN = 0.8
PANEL_W, PANEL_H, MARGIN = 560, 420, 60


def read_table(path):
    rows = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[4].endswith("x"):
            continue
        method, cache, _, _, speedup, psnr = cells
        if cache == "none":
            continue
        kind, threshold = cache.split()
        x = IDENTICAL_X if psnr == "identical" else min(float(psnr), X_MAX)
        rows.append((method, kind, threshold, x, float(speedup[:-1])))
    return rows


def draw_panel(image, left, top, title, rows, font):
    d = ImageDraw.Draw(image)
    Y_MAX = max([3.2] + [int(y * 2 + 1) / 2 + 0.2 for _, _, _, _, y in rows])
    x0, y0 = left + MARGIN, top + 30
    x1, y1 = left + PANEL_W - 20, top + PANEL_H - MARGIN
    px = lambda x: x0 + (x - X_MIN) / (X_MAX - X_MIN) * (x1 - x0)
    py = lambda y: y1 - (y - Y_MIN) / (Y_MAX - Y_MIN) * (y1 - y0)
    d.rectangle([px(30), py(Y_MAX), x1, py(1.8)], fill=(225, 240, 225))
    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    for x in range(15, 61, 5):
        d.line([px(x), y1, px(x), y1 + 4], fill=(0, 0, 0))
        d.text((px(x) - 6, y1 + 6), str(x), fill=(0, 0, 0), font=font)
    for y in [v / 2 for v in range(2, int(Y_MAX * 2) + 1)]:
        d.line([x0 - 4, py(y), x0, py(y)], fill=(0, 0, 0))
        d.line([x0, py(y), x1, py(y)], fill=(235, 235, 235))
        d.text((x0 - 34, py(y) - 6), f"{y:.1f}x", fill=(0, 0, 0), font=font)
    d.text((px(IDENTICAL_X) - 24, y1 + 20), "identical", fill=(0, 0, 0), font=font)
    d.text((x0 + (x1 - x0) / 2 - 80, y1 + 24), "PSNR vs uncached (dB)", fill=(0, 0, 0), font=font)
    d.text((x0, top + 8), title, fill=(0, 0, 0), font=font)
    d.text((px(30) + 4, py(Y_MAX) + 4), "target", fill=(60, 120, 60), font=font)
    for method, kind, threshold, x, y in rows:
        c = COLOURS.get(method, (0, 0, 0))
        r = 4
        box = [px(x) - r, py(y) - r, px(x) + r, py(y) + r]
        if kind == "first-block":
            d.ellipse(box, fill=c)
        else:
            d.rectangle(box, fill=c)
        if method == "serial":
            d.text((px(x) + 6, py(y) - 6), threshold, fill=c, font=font)


def main():
    out, panels = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    if not panels:
        sys.exit("usage: plot_step_cache.py OUT.png TITLE=TABLE.md ...")
    font = ImageFont.load_default()
    legend_h = 40
    image = Image.new("RGB", (PANEL_W * len(panels), PANEL_H + legend_h), "white")
    for i, (title, path) in enumerate(panels):
        draw_panel(image, i * PANEL_W, 0, title, read_table(path), font)
    d = ImageDraw.Draw(image)
    x = 20
    for method, c in COLOURS.items():
        d.ellipse([x, PANEL_H + 12, x + 8, PANEL_H + 20], fill=c)
        d.text((x + 12, PANEL_H + 10), method, fill=(0, 0, 0), font=font)
        x += 70
    d.ellipse([x + 20, PANEL_H + 12, x + 28, PANEL_H + 20], fill=(90, 90, 90))
    d.text((x + 32, PANEL_H + 10), "first-block", fill=(0, 0, 0), font=font)
    d.rectangle([x + 120, PANEL_H + 12, x + 128, PANEL_H + 20], fill=(90, 90, 90))
    d.text((x + 132, PANEL_H + 10), "teacache (labels: serial thresholds)", fill=(0, 0, 0), font=font)
    image.save(out)


if __name__ == "__main__":
    main()
