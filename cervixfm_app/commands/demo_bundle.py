"""``cervixfm demo-bundle``: train the demonstration model bundle from synthetic smears, where the viewer finds it."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub) -> None:
    p = sub.add_parser(
        "demo-bundle",
        help="train a small demonstration model bundle on synthetic smears (for the viewer's demo; not for diagnosis)",
        description="Draw synthetic Pap smears, pretrain a small ViT on them with CervixFM's DINOv2 recipe, train "
                    "cell and tile classifiers on their ground truth and write a model bundle with a README.txt "
                    "holding its held-out numbers. About 15 minutes on two CPU cores. The result is a "
                    "demonstration trained on synthetic data only: never use it for diagnosis.",
    )
    p.add_argument("--out", metavar="DIR",
                   help="bundle folder to write (default: <data dir>/bundles/demo, where the viewer looks)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny bundle in under a minute (checks the recipe; its numbers mean little)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing bundle at --out (kept until the new one is complete)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="keep the smears, pretraining run and analyses here (default: a temporary folder, removed)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


class _TerminalProgress:
    """A bar on a terminal; in a log file, one line per stage and every few percent, so logs stay short."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=1000, desc="demo-bundle", file=stream, bar_format="{l_bar}{bar}| {elapsed} {postfix}")
        self.last_fraction = -1.0
        self.last_stage = ""
        self.started = time.perf_counter()

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is not None:
            self.bar.update(max(0, int(fraction * 1000) - self.bar.n))
            self.bar.set_postfix_str(message[:70], refresh=True)
            return
        stage = message.split(":")[0]
        if stage != self.last_stage or fraction - self.last_fraction >= 0.05:
            elapsed = time.perf_counter() - self.started
            print(f"[{fraction * 100:3.0f}% {elapsed / 60:4.1f} min] {message}", file=self.stream, flush=True)
            self.last_stage, self.last_fraction = stage, fraction

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.demo_bundle import build_demo_bundle, check_destination, default_bundle_dir, read_report

    out = Path(args.out).expanduser() if args.out else default_bundle_dir()
    check_destination(out.resolve(), args.force)  # refuse at once, not after a quarter of an hour
    progress = None if args.quiet else _TerminalProgress()
    started = time.perf_counter()
    try:
        folder = build_demo_bundle(out, work_dir=args.work_dir, quick=args.quick, force=args.force,
                                   progress=progress)
    finally:
        if progress is not None:
            progress.close()
    held = read_report(folder)["held_out"]
    cells, tiles = held["cells"], held["tiles"]

    def num(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(f"wrote the demo bundle {folder} in {(time.perf_counter() - started) / 60:.1f} min (synthetic data, "
          "not for diagnosis; see README.txt there)")
    print(f"held-out cells: balanced accuracy {num(cells['balanced_accuracy'])} (chance "
          f"{num(cells['chance_balanced_accuracy'])}), AUROC abnormal vs normal "
          f"{num(cells['auroc_abnormal_vs_normal'])} ({cells['n']} cells)")
    print(f"held-out tiles: balanced accuracy {num(tiles['balanced_accuracy'])} (chance "
          f"{num(tiles['chance_balanced_accuracy'])}), AUROC abnormal vs NILM {num(tiles['auroc_abnormal_vs_normal'])}"
          f" ({tiles['n']} tiles)")
    return 0
