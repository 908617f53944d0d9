"""Show the Graph LSTM update order of an image's superpixels, or an MD-LSTM lattice scan.

Examples::

    python scripts/show_order.py photo.jpg --order raster --numbers --out order.png
    python scripts/show_order.py photo.jpg --order score --animate levels.gif
    python scripts/show_order.py photo.jpg --order score,random,raster --out compare.png
    python scripts/show_order.py photo.jpg --order confidence --checkpoint model.pt
    python scripts/show_order.py --lattice 6x8 --direction all --out lattice.png
    python scripts/show_order.py photo.jpg --influence 200,150 --order score,random,raster
    python scripts/show_order.py photo.jpg --influence 200,150 --order confidence,random \
        --checkpoint model.pt
    python scripts/show_order.py photo.jpg --html explorer.html
    python scripts/show_order.py --lattice 6x8 --html lattice.html

Orders: ``confidence`` (a trained model's, needs --checkpoint), ``random``
(--seed), ``raster`` (centroids, top row first) and ``score`` (the mean of
--score-image over each superpixel; without it a smooth random field, seeded
by --seed, stands in for a model's confidence and is called "smooth score");
``reverse-confidence`` and ``reverse-score`` run those two backwards.
Several comma-separated orders give one comparison picture; the animation
uses the first. With --order confidence the model's own superpixels are used
(--n-segments and --compactness do not apply).

--influence X,Y draws, for each order, the superpixels that can change the
output of the superpixel under pixel (X, Y) (column, row) in one Graph LSTM
layer (--layers N: a stack of N that passes its state on), shaded by their
hop distance from it; with --checkpoint, shaded by the Jacobian norm of the
model's output at that superpixel with respect to each superpixel's node
input, through all the model's layers, on the model's own superpixels.

--hierarchy OUT.png (with --checkpoint of a model trained with --graph-model
evolving) draws the model's merged regions of every level over the image,
each region coloured by its update rank on its level.

--out writes the picture (.png, .pdf, .svg, .jpg; default order.png, or
influence.png with --influence, when --animate is not given). --animate
writes the level-by-level animation (.gif; .mp4 where imageio-ffmpeg or
ffmpeg is installed, otherwise the animation is skipped with a warning, or
it is an error if it is the only output). Files are written atomically.
Errors print one line and exit 1.

--html writes the interactive explorer (segmentation.visualize.explorer):
one self-contained page to open in a browser, where clicking a superpixel
shows its reach (--layers N: the page's starting number of layers) in every
--order (default for --html: score, reverse-score, random, raster, and
confidence, reverse-confidence with --checkpoint). With --checkpoint it also
holds each superpixel's predicted class and confidence, and with --influence
X,Y the Jacobian norms of that superpixel's output, shaded when it is
selected (the page opens with it selected).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from segmentation.cli._common import (
    ArgumentParser,
    CLIError,
    check_writable_file,
    positive_float,
    positive_int,
    run_main,
)
from segmentation.models.orders import ORDER_KINDS

# The model's orders, and two of a score given or computed here.
ORDERS = (*ORDER_KINDS, "score", "reverse-score")
FIGURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
ANIMATIONS = (".gif", ".mp4")
PAGES = (".html", ".htm")


def _parse_lattice(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLUMNS such as 6x8, got {text!r}")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1 or rows * cols > 10_000:
        raise argparse.ArgumentTypeError(
            f"lattice sizes must be positive with at most 10000 cells, got {text!r}")
    return rows, cols


def _parse_direction(text: str) -> tuple[int, ...]:
    if text == "all":
        return (0, 1, 2, 3)
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 0..3, a comma-separated list or 'all', got {text!r}") from None
    if not values or any(not 0 <= v <= 3 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"directions must be distinct values in 0..3 (bit 0: rows backwards, "
            f"bit 1: columns backwards), got {text!r}")
    return values


def _parse_pixel(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(-?\d+)\s*,\s*(-?\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a pixel X,Y such as 120,80, got {text!r}")
    x, y = int(match.group(1)), int(match.group(2))
    if x < 0 or y < 0:
        raise argparse.ArgumentTypeError(
            f"expected a pixel X,Y with column X >= 0 and row Y >= 0 (0,0 is the top-left "
            f"corner), got {text!r}")
    return x, y


def _parse_orders(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",")]
    for kind in kinds:
        if kind not in ORDERS:
            raise argparse.ArgumentTypeError(
                f"unknown order {kind!r}; choose from {', '.join(ORDERS)}")
    if len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(f"an order is repeated in {text!r}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "show_order.py"
    epilog = __doc__.split("\n", 2)[2].replace("``", "'").replace("::", ":")
    if prog.startswith("graphlstm-"):  # the installed command: examples in its own name
        epilog = epilog.replace("python scripts/show_order.py", prog)
    parser = ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", nargs="?", metavar="IMAGE",
                        help="image file (any format Pillow reads); not with --lattice")
    parser.add_argument("--order", type=_parse_orders, default=None,
                        metavar="KIND[,KIND...]",
                        help=f"update order(s): {', '.join(ORDERS)} (default: score; "
                             "with --html all that apply)")
    parser.add_argument("--score-image", metavar="PATH",
                        help="scores for --order score: a .npy H×W array or a grayscale "
                             "image of the same size as IMAGE (higher = updated earlier)")
    parser.add_argument("--checkpoint", metavar="C",
                        help="trained model for --order confidence")
    parser.add_argument("--n-segments", type=positive_int, default=400,
                        help="approximate number of SLIC superpixels (default: 400)")
    parser.add_argument("--compactness", type=positive_float, default=10.0,
                        help="SLIC compactness, > 0 (default: 10)")
    parser.add_argument("--numbers", action="store_true",
                        help="write each superpixel's rank at its centroid")
    parser.add_argument("--animate", metavar="OUT.gif|OUT.mp4",
                        help="write the level-by-level animation here")
    parser.add_argument("--fps", type=float, default=4.0,
                        help="animation frames per second (default: 4)")
    parser.add_argument("--out", metavar="OUT.png",
                        help="write the picture here (default: order.png without --animate)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of --order random and of the smooth score (default: 0)")
    parser.add_argument("--influence", type=_parse_pixel, metavar="X,Y",
                        help="draw the superpixels that can influence the one under pixel "
                             "X,Y (column, row), for each order")
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="Graph LSTM layers of --influence (and of the --html page) "
                             "without --checkpoint (default: 1)")
    parser.add_argument("--html", metavar="OUT.html",
                        help="write the interactive explorer page here")
    parser.add_argument("--hierarchy", metavar="OUT.png",
                        help="with --checkpoint of a structure-evolving model (train.py "
                             "--graph-model evolving): draw its merged regions of every level "
                             "over the image, coloured by their update rank on the level")
    parser.add_argument("--lattice", type=_parse_lattice, metavar="HxW",
                        help="show an MD-LSTM scan of an H×W lattice instead of an image")
    parser.add_argument("--direction", type=_parse_direction, default=None, metavar="K",
                        help="lattice scan direction(s) 0..3, comma-separated, or 'all' "
                             "(default: all for --out, 0 for --animate)")
    parser.add_argument("--cell", type=positive_int, default=24,
                        help="pixels per lattice cell in the animation (default: 24)")
    return parser


def _check_output(path: str | None, formats: tuple[str, ...], option: str) -> None:
    if path is None:
        return
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in formats:
        raise CLIError(f"{option} {path!r} must end in {', '.join(formats)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"{option} {path!r}: folder {folder!r} does not exist")
    check_writable_file(path, option)


def _check_args(args) -> None:
    """Every check that needs no heavy import, so that bad options fail at once."""
    if args.order is None:
        args.order = ["score"]
        if args.html is not None and args.lattice is None:
            args.order = (["confidence", "reverse-confidence"] if args.checkpoint else []) + [
                "score", "reverse-score", "random", "raster"]
    if args.lattice is not None:
        if args.image is not None:
            raise CLIError("give either IMAGE or --lattice, not both")
        for option in ("score_image", "checkpoint", "influence", "hierarchy"):
            if getattr(args, option) is not None:
                raise CLIError(f"--{option.replace('_', '-')} does not apply to --lattice")
        if args.layers is not None and args.html is None:
            raise CLIError("--layers does not apply to --lattice without --html")
    else:
        if args.image is None:
            raise CLIError("give an IMAGE file (or --lattice HxW)")
        if args.direction is not None:
            raise CLIError("--direction applies to --lattice only")
        confident = {"confidence", "reverse-confidence"} & set(args.order)
        if confident and args.checkpoint is None:
            raise CLIError(f"--order {sorted(confident)[0]} needs --checkpoint (a trained "
                           "model); use --order score for a stand-in without a model")
        if args.hierarchy is not None and args.checkpoint is None:
            raise CLIError("--hierarchy needs --checkpoint (a model trained with "
                           "--graph-model evolving)")
        if (args.checkpoint is not None and not confident and args.influence is None
                and args.html is None and args.hierarchy is None):
            raise CLIError("--checkpoint is used by --order confidence, --influence, "
                           "--hierarchy and --html only")
        if args.influence is not None:
            if args.animate is not None:
                raise CLIError("--animate does not apply to --influence")
            if args.numbers:
                raise CLIError("--numbers does not apply to --influence")
            if args.layers is not None and args.checkpoint is not None:
                raise CLIError("--layers does not apply with --checkpoint (the model's "
                               "own layers are used)")
        if args.layers is not None:
            if args.influence is None and args.html is None:
                raise CLIError("--layers applies to --influence only, and to the --html page")
            if args.checkpoint is not None:
                raise CLIError("--layers does not apply with --checkpoint (the model's "
                               "own layers are used)")
        if args.score_image is not None and not {"score", "reverse-score"} & set(args.order):
            raise CLIError("--score-image is used by --order score and reverse-score only")
        for option, path in (("IMAGE", args.image), ("--score-image", args.score_image),
                             ("--checkpoint", args.checkpoint)):
            if path is not None and not os.path.isfile(path):
                raise CLIError(f"{option} {path!r} does not exist or is not a file")
    if args.layers is not None and args.html is not None and args.layers > 16:
        raise CLIError(f"--layers must be at most 16 with --html, got {args.layers}")
    if not (args.fps > 0 and args.fps != float("inf")):
        raise CLIError(f"--fps must be a finite number > 0, got {args.fps}")
    _check_output(args.out, FIGURES, "--out")
    _check_output(args.animate, ANIMATIONS, "--animate")
    _check_output(args.html, PAGES, "--html")
    _check_output(args.hierarchy, FIGURES, "--hierarchy")
    if args.out is not None and args.animate is not None and (
            os.path.abspath(args.out) == os.path.abspath(args.animate)):
        raise CLIError("--out and --animate must be different files")


def _read_score_image(path: str, shape: tuple[int, int]):
    import numpy as np

    from segmentation import read_image

    if path.lower().endswith(".npy"):
        try:
            scores = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CLIError(f"cannot read --score-image {path!r}: {err}") from None
        if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.number) or np.iscomplexobj(
                scores):
            raise CLIError(f"--score-image {path!r} must hold a 2-D real array, got "
                           f"{scores.dtype} {scores.shape}")
        if not np.isfinite(scores).all():
            raise CLIError(f"--score-image {path!r} holds NaN or inf")
        scores = scores.astype(np.float64)
    else:
        rgb = read_image(path)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise CLIError(f"--score-image {path!r} is a colour image; expected a grayscale "
                           "image or a .npy array")
        scores = rgb[..., 0].astype(np.float64) / 255.0
    if scores.shape != shape:
        raise CLIError(f"--score-image {path!r} is {scores.shape[0]}×{scores.shape[1]} but "
                       f"IMAGE is {shape[0]}×{shape[1]}; they must have the same size")
    return scores


def _predict(checkpoint: str, image):
    return _load(checkpoint).predict(image)


def _load(checkpoint: str):
    from segmentation.inference.predictor import load_segmenter

    return load_segmenter(checkpoint, device="cpu")


def _influence(args, image, superpixels, edge_index, schedules, segmenter) -> int:
    from graphlstm import reachable
    from segmentation import visualize
    from segmentation.visualize.influence import target_superpixel

    x, y = args.influence
    height, width = superpixels.shape
    if not (x < width and y < height):
        raise CLIError(f"--influence pixel ({x}, {y}) is outside the {width}×{height} image")
    target = target_superpixel(superpixels, x, y)
    values = None
    layers = args.layers or 1
    if segmenter is not None:
        from segmentation.analysis.influence import node_influence

        layers = segmenter.model.config.graph_layers
        if layers == 0:
            raise CLIError("--influence: the model has no Graph LSTM layers (graph_layers=0)")
        graph = segmenter.transform(image)
        values = {name: node_influence(segmenter.model, graph, target, args.scores[name])[0]
                  for name in schedules}
    visualize.plot_influence(image, superpixels, edge_index, target, schedules,
                             values=values, num_layers=layers, path=args.out)
    num = int(superpixels.max()) + 1
    reach = {name: reachable(edge_index, num, [target], order=s.order, num_layers=layers)
             for name, s in schedules.items()}
    sizes = ", ".join(f"{name}: {int(r.sum())}" for name, r in reach.items())
    print(f"wrote {args.out} ({num} superpixels; target superpixel {target} at ({x}, {y}); "
          f"reach {sizes})")
    return 0


def _html(args, image, superpixels, edge_index, prediction, segmenter) -> None:
    from segmentation.visualize.explorer import model_annotations, order_explorer

    num = int(superpixels.max()) + 1
    target, extra = None, {}
    if args.influence is not None:
        from segmentation.visualize.influence import target_superpixel

        x, y = args.influence
        height, width = superpixels.shape
        if not (x < width and y < height):
            raise CLIError(f"--influence pixel ({x}, {y}) is outside the {width}×{height} image")
        target = target_superpixel(superpixels, x, y)
    if segmenter is not None:
        extra = model_annotations(segmenter, image, prediction, args.scores, target)
    page = order_explorer(image, superpixels, edge_index, args.scores,
                          layers=extra.pop("layers", args.layers or 1), selected=target,
                          title=f"Update orders of {os.path.basename(args.image)}: "
                                f"{num} superpixels", **extra)
    page.save(args.html)
    print(f"wrote {args.html} ({num} superpixels; orders {', '.join(args.scores)}; "
          f"{page.num_bytes / 1e6:.2f} MB)")


def _hierarchy(args, image) -> None:
    """--hierarchy: the merged regions of every level of an evolving model."""
    import torch

    from segmentation.visualize.hierarchy import plot_hierarchy

    segmenter = _load(args.checkpoint)
    model = segmenter.model
    if model.config.graph_model != "evolving":
        raise CLIError(f"--hierarchy needs a checkpoint of --graph-model evolving; "
                       f"{args.checkpoint!r} holds graph_model={model.config.graph_model!r}")
    rgb = image if image.ndim == 3 else image[..., None].repeat(3, axis=2)
    graph = segmenter.transform(rgb[..., :3]).to(segmenter.device)
    with torch.no_grad():
        out = model(graph.image, graph.superpixels, graph.edge_index,
                    torch.tensor([graph.num_nodes], device=segmenter.device), graph.pos)
    hierarchy = out.hierarchy
    plot_hierarchy(rgb[..., :3], graph.superpixels[0].cpu(), hierarchy, args.hierarchy)
    sizes = " -> ".join(map(str, hierarchy.num_nodes))
    print(f"wrote {args.hierarchy} (regions per level: {sizes})")


def _lattice(args) -> int:
    from segmentation import visualize

    rows, cols = args.lattice
    if args.html is not None:
        from segmentation.visualize.explorer import lattice_explorer

        directions = args.direction if args.direction is not None else (0, 1, 2, 3)
        lattice_explorer((rows, cols), directions, layers=args.layers or 1).save(args.html)
        print(f"wrote {args.html} ({rows}×{cols} lattice, {len(directions)} scan directions)")
    if args.out is not None:
        directions = args.direction if args.direction is not None else (0, 1, 2, 3)
        visualize.plot_lattice_wavefront((rows, cols), directions, path=args.out)
        print(f"wrote {args.out} ({rows}×{cols} lattice, {rows + cols - 1} levels)")
    if args.animate is not None:
        directions = args.direction if args.direction is not None else (0,)
        frames = visualize.lattice_wavefront_frames((rows, cols), list(directions),
                                                    cell=args.cell)
        visualize.save_level_animation(args.animate, frames, fps=args.fps)
        print(f"wrote {args.animate} ({len(frames)} frames)")
    return 0


def _resolve_outputs(args) -> None:
    """Default --out; skip an MP4 that cannot be written (checked before any work)."""
    if (args.out is None and args.animate is None and args.html is None
            and args.hierarchy is None):
        args.out = "order.png" if args.influence is None else "influence.png"
    if args.animate is not None and args.animate.lower().endswith(".mp4"):
        from segmentation.visualize import mp4_writer_available

        if not mp4_writer_available():
            message = (f"cannot write --animate {args.animate!r}: no MP4 writer "
                       "(pip install imageio-ffmpeg, or use a .gif)")
            if args.out is None:
                raise CLIError(message)
            print(f"{os.path.basename(sys.argv[0])}: warning: {message}; "
                  "skipping the animation", file=sys.stderr)
            args.animate = None


def _image(args) -> int:
    import numpy as np
    import torch

    from graphlstm import build_schedule
    from segmentation import (
        read_image,
        region_adjacency,
        slic_superpixels,
        superpixel_centroids,
        visualize,
    )
    from segmentation.models.orders import (
        random_score,
        raster_score,
        score_from_image,
        smooth_random_field,
    )

    image = read_image(args.image)
    shape = image.shape[:2]
    if args.hierarchy is not None:
        _hierarchy(args, image)
        if args.out is None and args.animate is None and args.html is None:
            return 0
    score_map = _read_score_image(args.score_image, shape) if args.score_image else None

    prediction = segmenter = None
    if args.checkpoint is not None and (args.influence is not None or args.html is not None):
        segmenter = _load(args.checkpoint)
        prediction = segmenter.predict(image)
    elif {"confidence", "reverse-confidence"} & set(args.order):
        prediction = _predict(args.checkpoint, image)
    if prediction is not None:
        superpixels = np.asarray(prediction.superpixels)
        edge_index = torch.as_tensor(prediction.edge_index).long()
    else:
        superpixels = slic_superpixels(image, n_segments=args.n_segments,
                                       compactness=args.compactness)
        edge_index, _ = region_adjacency(superpixels)
    num = int(superpixels.max()) + 1

    schedules, panels, scores = {}, {}, {}
    score_name = "score" if score_map is not None else "smooth score"
    for kind in args.order:
        if kind in ("confidence", "reverse-confidence"):
            name = kind
            score = torch.as_tensor(prediction.node_score).double()
            score = score if kind == "confidence" else -score
            panels[name] = (np.asarray(prediction.confidence), "confidence")
        elif kind == "random":
            name = "random"
            score = random_score(num, torch.Generator().manual_seed(args.seed))
        elif kind == "raster":
            name = "raster"
            score = raster_score(superpixel_centroids(superpixels), shape[1])
        else:
            name = score_name
            if score_map is None:
                score_map = smooth_random_field(shape, 0.1, args.seed)
            score = score_from_image(score_map, superpixels, num)
            panels[name] = (score_map, f"{name} (higher = earlier)")
            if kind == "reverse-score":
                name = f"reverse {name}"
                score = -score
                panels[name] = (-score_map, f"{name} (higher = earlier)")
        schedules[name] = build_schedule(edge_index, num, score=score)
        scores[name] = score
    args.scores = scores

    if args.html is not None:
        _html(args, image, superpixels, edge_index, prediction, segmenter)
    if args.influence is not None and args.out is not None:
        return _influence(args, image, superpixels, edge_index, schedules, segmenter)
    out, animate = args.out, args.animate
    first, schedule = next(iter(schedules.items()))
    if out is not None:
        if len(schedules) == 1:
            confidence, label = panels.get(first, (None, "confidence"))
            visualize.plot_update_order(image, superpixels, schedule, confidence=confidence,
                                        numbers=args.numbers, path=out,
                                        confidence_label=label,
                                        title=f"{first} order: {num} superpixels, "
                                              f"{schedule.num_levels} levels")
        else:
            visualize.plot_order_comparison(image, superpixels, schedules, path=out)
        levels = ", ".join(f"{k}: {s.num_levels}" for k, s in schedules.items())
        print(f"wrote {out} ({num} superpixels; levels {levels})")
    if animate is not None:
        frames = visualize.level_frames(image, superpixels, schedule)
        visualize.save_level_animation(animate, frames, fps=args.fps)
        print(f"wrote {animate} ({first} order, {len(frames)} frames = "
              f"{schedule.num_levels} levels + 1)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    _resolve_outputs(args)
    return _lattice(args) if args.lattice is not None else _image(args)


def console_main() -> int:
    """The ``graphlstm-show-order`` command: :func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
