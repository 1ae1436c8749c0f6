"""Draws jobs/demo-harbour.png, the demo harbour clip's init image: shapes a person can follow
while the camera zooms, turns and drifts (tiny's own pictures are textures that do not).

    python jobs/draw-demo-harbour.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128


def draw() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    pen = ImageDraw.Draw(image)
    horizon = 74
    for y in range(horizon):  # night sky, lighter towards the horizon
        t = y / horizon
        pen.line([(0, y), (SIZE, y)], fill=(int(20 + 60 * t), int(30 + 50 * t), int(90 + 60 * t)))
    for y in range(horizon, SIZE):  # dark water
        t = (y - horizon) / (SIZE - horizon)
        pen.line([(0, y), (SIZE, y)], fill=(int(10 + 20 * t), int(25 + 25 * t), int(60 + 30 * t)))
    pen.ellipse([86, 12, 108, 34], fill=(250, 240, 200))  # the moon
    for i, y in enumerate(range(horizon + 4, SIZE, 6)):  # its reflection, broken by waves
        half = 10 - i
        pen.line([(97 - half, y), (97 + half, y)], fill=(220, 210, 170), width=2)
    pen.rectangle([0, 56, 46, horizon], fill=(40, 35, 45))  # the harbour wall and its houses
    for x, h in ((4, 12), (18, 18), (32, 10)):
        pen.rectangle([x, 56 - h, x + 11, 56], fill=(70, 50, 55))
        pen.rectangle([x + 4, 56 - h + 4, x + 7, 56 - h + 8], fill=(255, 200, 80))  # a lit window
    pen.polygon([(44, 92), (84, 92), (76, 102), (50, 102)], fill=(150, 40, 35))  # a boat
    pen.line([(64, 92), (64, 62)], fill=(230, 230, 230), width=2)  # its mast
    pen.polygon([(66, 64), (66, 90), (84, 90)], fill=(235, 235, 225))  # its sail
    return image


if __name__ == "__main__":
    draw().save(Path(__file__).with_name("demo-harbour.png"), optimize=True)
