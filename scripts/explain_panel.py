"""Every explanation method on one photo, as one contact sheet (the README's picture).

    python scripts/explain_panel.py [--image PHOTO] [--model mini_xception_fer2013] [--out docs/explain_panel.jpg]

Default photo: scikit-image's astronaut. The face is found and cropped as `python -m fer_core predict` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.explain import explain, list_methods, panel  # noqa: E402
from fer_core.face import load_image  # noqa: E402
from fer_core.predict import Predictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=None, help="photo (default: scikit-image's astronaut)")
    ap.add_argument("--model", default="mini_xception_fer2013")
    ap.add_argument("--out", type=Path, default=Path("docs/explain_panel.jpg"))
    ap.add_argument("--per-row", type=int, default=7)
    args = ap.parse_args()
    if args.image:
        image = load_image(args.image)
    else:
        from skimage.data import astronaut

        image = astronaut()
    predictor = Predictor.from_model(args.model)
    crop = predictor.predict(image)[0].crop
    methods = [m for m in list_methods() if m != "activations"]
    explanations = [explain(predictor.model, crop, m) for m in methods]
    rows = [panel(crop, explanations[i:i + args.per_row - 1]) for i in range(0, len(explanations),
                                                                             args.per_row - 1)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack(rows)).save(args.out, quality=90)
    print(args.out)


if __name__ == "__main__":
    main()
