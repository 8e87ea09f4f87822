"""Sends an image to the served example with Triton's HTTP client and prints
the answer.

    python client.py [IMAGE] [--url 127.0.0.1:8080] [--model image_classifier]

Without IMAGE it draws a small PNG with Pillow.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import tritonclient.http as httpclient
from PIL import Image, ImageDraw


def sample_png() -> bytes:
    img = Image.new("RGB", (64, 48), (30, 120, 200))
    ImageDraw.Draw(img).ellipse((10, 8, 50, 40), fill=(240, 200, 40))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", nargs="?")
    parser.add_argument("--url", default="127.0.0.1:8080")
    parser.add_argument("--model", default="image_classifier")
    args = parser.parse_args()
    data = open(args.image, "rb").read() if args.image else sample_png()

    client = httpclient.InferenceServerClient(args.url)
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([data], dtype=object), binary_data=True)
    result = client.infer(args.model, [image])
    print(result.as_numpy("label")[0].decode(), float(result.as_numpy("score")[0]))


if __name__ == "__main__":
    main()
