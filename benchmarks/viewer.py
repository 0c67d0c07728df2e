"""Viewer responsiveness on a large synthetic slide, offscreen, while an analysis loads the CPU.

1. Open -> first painted view: from ``MainWindow.open_path`` (open the file, read the base image) until the slide
   view has painted once (with the base image standing in for tiles still loading); also until every visible tile
   is at full detail. Target: first paint <= 0.5 s.
2. A scripted pan/zoom tour (zoom from the whole slide to 40x, pan, zoom out to 10x, pan, jump through the overview,
   zoom to 20x, pan, zoom out to fit; one view change per 16 ms frame) while Analysis › Analyse Slide runs a model
   bundle with a random ViT-S/16 over the same slide, as the viewer runs it: in the analysis process, following the
   viewport, its tile scores streaming into the heat-map layer and the slide score panel. Measured: the
   longest event-loop stall (largest gap between ticks of a 5 ms heartbeat timer) and the p95 time between painted
   frames. Targets: stall <= 50 ms, p95 <= 33 ms.
3. The same tour with 100,000 detections (random boxes in the cell-bearing area, six classes) in a vector layer.

The tile cache is emptied before each tour so both read the same tiles. The slide is generated once into
``--workdir`` (a 100,000-pixel slide takes about 8 minutes on a 2-core machine; ``--size`` takes a smaller one and
the output says which was used).

Usage: QT_QPA_PLATFORM=offscreen python benchmarks/viewer.py [--size 100000] [--workdir DIR] [--no-analysis]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

FIRST_PAINT_S = 0.5
STALL_MS = 50.0
P95_MS = 33.0
FRAME_MS = 16
HEARTBEAT_MS = 5


def make_slide(folder: Path, side: int) -> Path:
    from core.synthetic import generate_slide

    path = folder / f"viewer_{side}.tiff"
    if not path.exists():
        print(f"generating {path} (once) ...", flush=True)
        t0 = time.perf_counter()
        generate_slide(path, side, side, seed=0, geojson=False)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def vits16_bundle(folder: Path) -> Path:
    """A model bundle as users have them: a random ViT-S/16 backbone (unit layer scales, so tiles differ) and a
    random linear tile classifier, whose P(abnormal) the heat map shows."""
    import torch

    from core.models import ViTConfig, build_vit
    from core.models.bundle import MANIFEST, BundleSpec, HeadSpec, write_bundle_manifest
    from core.models.heads import LinearHead, save_head

    bundle = folder / "vits16_random_bundle"
    if (bundle / MANIFEST).is_file():
        return bundle
    (bundle / "heads").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = ViTConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224, ffn_layer="mlp")
    state = build_vit(cfg).state_dict()
    for key, value in state.items():
        if key.endswith(".gamma"):
            value.fill_(1.0)
    torch.save(state, bundle / "backbone.pth")
    head = LinearHead(384, 2)
    torch.nn.init.normal_(head.classifier.weight, std=0.5)
    head_file = save_head(bundle / "heads" / "tiles.safetensors", "linear", head, head.config(), ["NILM", "SIL"],
                          [[90, 160, 90], [220, 60, 60]], {"normal_classes": ["NILM"]})
    write_bundle_manifest(BundleSpec(bundle, "Viewer benchmark (random ViT-S/16)", bundle / "backbone.pth", None,
                                     None, None, 224, 0.5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                     (HeadSpec("tiles", "tile-classifier", head_file),)))
    return bundle


def spin(app, until, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.001)
    return False


def tiles_done(window) -> int:
    overlays = window.analysis._overlays
    scores = overlays.primary_scores if overlays is not None else None
    return int(np.isfinite(scores.values).sum()) if scores is not None else 0


def cell_points(foreground, size: int, n: int, rng) -> np.ndarray:
    """Random level-0 points in the cell-bearing area (uniform over the slide if no mask)."""
    if foreground is None:
        return rng.uniform(0, size, (n, 2))
    out = []
    while sum(len(o) for o in out) < n:
        xy = rng.uniform(0, size, (4 * n, 2))
        keep = foreground.coverage(xy[:, 0], xy[:, 1], 1, 1) > 0
        out.append(xy[keep])
    return np.concatenate(out)[:n]


def tour_steps(view, size: int, points: np.ndarray) -> list:
    """The scripted tour as a list of callables, one per frame."""
    mpp = view.source.mpp[0]
    fit = view.fit_downsample()
    steps = []

    def zoom_to(target_ds: float, frames: int, anchor_level0=None):
        def step(i, frames=frames):
            ds = view.downsample
            factor = (ds / target_ds) ** (1.0 / max(1, frames - i))
            anchor = view.map_from_slide(anchor_level0) if anchor_level0 is not None else None
            view.zoom_by(factor, anchor)
        steps.extend(partial_steps(step, frames))

    def pan(dx: float, dy: float, frames: int):
        steps.extend([lambda dx=dx, dy=dy: view.pan_pixels(dx, dy)] * frames)

    def jump(x: float, y: float):
        steps.append(lambda: view.center_on(x, y))

    from PySide6.QtCore import QPointF

    p1, p2 = QPointF(*points[0]), QPointF(*points[1])
    steps.append(lambda: view.center_on(p1.x(), p1.y()))
    zoom_to(0.25 / mpp, 60)  # to 40x
    pan(-12, -8, 90)
    zoom_to(1.0 / mpp, 20)  # to 10x
    pan(20, -14, 90)
    jump(p2.x(), p2.y())
    zoom_to(0.5 / mpp, 30)  # to 20x
    pan(-16, 16, 60)
    zoom_to(fit, 40)
    return steps


def partial_steps(step, frames: int) -> list:
    return [lambda i=i: step(i) for i in range(frames)]


def thread_times(pids) -> dict[tuple[int, int], tuple[str, int, float, float]]:
    """Per thread of the given processes: (name, nice, seconds on a CPU, seconds waiting for one), from /proc
    (Linux; empty elsewhere). Who takes the CPU while the GUI waits is what decides where a stall comes from."""
    out = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*") if pid else ():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = (task / "comm").read_text().strip()
                run_ns, wait_ns, _ = (int(v) for v in (task / "schedstat").read_text().split())
            except (OSError, ValueError):
                continue
            policy = {"0": "", "3": ", batch", "5": ", idle"}.get(fields[38], f", policy {fields[38]}")
            out[(pid, int(task.name))] = (f"{name} (nice {fields[16]}{policy})", 0, run_ns / 1e9, wait_ns / 1e9)
    return out


def busiest_threads(before: dict, after: dict, seconds: float, main_pid: int, top: int = 8) -> list[str]:
    rows = []
    for key, (name, nice, run, wait) in after.items():
        run0, wait0 = (before[key][2], before[key][3]) if key in before else (0.0, 0.0)
        rows.append((run - run0, wait - wait0, name, nice, key[0] == main_pid))
    rows.sort(reverse=True)
    return [f"{'viewer' if own else 'analysis'}:{name} on CPU {run / seconds * 100:4.0f}%, "
            f"waiting {wait / seconds * 100:3.0f}%" for run, wait, name, nice, own in rows[:top] if run > 0]


class StallSampler:
    """While the heartbeat is late, sample where the GUI thread is (its Python stack) every few milliseconds, so a
    stall can be traced to the code that caused it. Off unless asked for (``--stall-stacks``)."""

    def __init__(self, beats: list, late_ms: float = 25.0) -> None:
        import collections

        self.beats, self.late = beats, late_ms / 1000
        self.gui = threading.main_thread().ident
        self.counts = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stall-sampler", daemon=True)

    def _loop(self) -> None:
        import traceback

        while not self._stop.wait(0.004):
            if not self.beats or time.perf_counter() - self.beats[-1] < self.late:
                continue
            frame = sys._current_frames().get(self.gui)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-4:]
                self.counts[" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))] += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, top: int = 6) -> list[str]:
        return [f"{n:4d} x {where}" for where, n in self.counts.most_common(top)]


def run_tour(app, window, steps: list, pids=(), stall_stacks: bool = False) -> dict:
    """Play ``steps`` one per frame; measure heartbeat gaps and the time between painted frames."""
    from PySide6.QtCore import Qt, QTimer

    view = window.view
    beats: list[float] = []
    frames: list[float] = []
    paint_ms: list[float] = []
    state = {"i": 0, "done": False}

    paint_cpu_ms: list[float] = []

    def on_paint(ms: float) -> None:
        frames.append(time.perf_counter())
        paint_ms.append(ms)
        paint_cpu_ms.append(view.last_paint_cpu_ms)

    def advance() -> None:
        if state["i"] >= len(steps):
            state["done"] = True
            return
        steps[state["i"]]()
        state["i"] += 1

    beat_sched: list[tuple[float, float]] = []

    def beat() -> None:
        beats.append(time.perf_counter())
        beat_sched.append(schedstat())

    heartbeat = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=HEARTBEAT_MS, timeout=beat)
    driver = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=FRAME_MS, timeout=advance)
    view.framePainted.connect(on_paint)
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    sched0 = schedstat()
    threads0 = thread_times(pids)
    gcs0 = window.idle_gc.collections
    sampler = StallSampler(beats) if stall_stacks else None
    heartbeat.start()
    driver.start()
    if sampler is not None:
        with sampler:
            spin(app, lambda: state["done"], timeout=len(steps) * 0.5 + 30)
    else:
        spin(app, lambda: state["done"], timeout=len(steps) * 0.5 + 30)
    t1 = time.perf_counter()
    cpu1 = time.thread_time()
    sched1 = schedstat()
    threads1 = thread_times(pids)
    driver.stop()
    heartbeat.stop()
    view.framePainted.disconnect(on_paint)
    beat_gaps = np.diff(beats) * 1000 if len(beats) > 1 else np.zeros(1)
    # the longest gap, split into what the GUI thread did meanwhile: ran, waited for a CPU, or was blocked (on the
    # interpreter lock, another lock, or I/O)
    worst = int(np.argmax(beat_gaps)) if len(beats) > 1 else 0
    if len(beats) > 1:
        ran = (beat_sched[worst + 1][0] - beat_sched[worst][0]) * 1000
        waited = (beat_sched[worst + 1][1] - beat_sched[worst][1]) * 1000
        stall_split = (ran, waited, max(0.0, beat_gaps[worst] - ran - waited))
    else:
        stall_split = (0.0, 0.0, 0.0)
    frame_gaps = np.diff(frames) * 1000 if len(frames) > 1 else np.zeros(1)
    return {
        "seconds": t1 - t0,
        "steps": len(steps),
        "frames": len(frames),
        "fps": len(frames) / (t1 - t0),
        "stall_ms": float(beat_gaps.max()),
        "heartbeat_p99_ms": float(np.percentile(beat_gaps, 99)),
        "frame_p95_ms": float(np.percentile(frame_gaps, 95)),
        "frame_max_ms": float(frame_gaps.max()),
        "paint_p95_ms": float(np.percentile(paint_ms, 95)) if paint_ms else 0.0,
        "paint_max_ms": float(max(paint_ms)) if paint_ms else 0.0,
        "paint_cpu_p95_ms": float(np.percentile(paint_cpu_ms, 95)) if paint_cpu_ms else 0.0,
        "gui_thread_cpu_share": (cpu1 - cpu0) / (t1 - t0),
        "gui_thread_runqueue_share": (sched1[1] - sched0[1]) / (t1 - t0),
        "stall_ran_waited_blocked_ms": stall_split,
        "full_gcs_during_tour": window.idle_gc.collections - gcs0,
        "stall_stacks": sampler.report() if sampler is not None else [],
        "busiest_threads": busiest_threads(threads0, threads1, t1 - t0, os.getpid()),
    }


def schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of the calling thread (Linux; zeros elsewhere).
    Time that is neither is time spent blocked: waiting for the GIL, a lock or I/O."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
            run_ns, wait_ns, _ = (int(v) for v in fh.read().split())
        return run_ns / 1e9, wait_ns / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100000, help="slide side in pixels (default 100000)")
    ap.add_argument("--workdir", type=Path, default=None, help="cache folder for the slide and the model")
    ap.add_argument("--detections", type=int, default=100000)
    ap.add_argument("--no-analysis", action="store_true", help="tour without the background analysis")
    ap.add_argument("--stall-stacks", action="store_true", help="sample the GUI thread's stack during stalls")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cervixfm-viewer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # a fresh home: no saved analysis to resume (every run analyses from the start), nothing of the user's touched
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    os.environ["CERVIXFM_HOME"] = str(home)
    slide_path = make_slide(work, args.size)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from cervixfm_app.viewer.layers import VectorLayer
    from cervixfm_app.viewer.main_window import MainWindow
    from core.overlays import ObjectSet
    from core.synthetic import CLASS_NAMES
    from core.synthetic.classes import CLASSES

    from cervixfm_app.viewer.workers import tune_interpreter_for_gui

    tune_interpreter_for_gui()  # as cervixfm-viewer does
    app = QApplication.instance() or QApplication([])
    settings = QSettings(str(work / "viewer_bench.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings)
    window.resize(1600, 1000)
    window.show()
    spin(app, lambda: False, 0.3)

    # 1. open -> first paint
    view = window.view
    before = view.paint_count
    t0 = time.perf_counter()
    ok = window.open_path(slide_path)
    if not ok:
        raise SystemExit(f"could not open {slide_path}")
    spin(app, lambda: view.paint_count > before, 10)
    first_paint = time.perf_counter() - t0
    spin(app, lambda: view.is_complete() and view.source.is_idle(), 30)
    sharp = time.perf_counter() - t0
    results = {"slide": str(slide_path), "size": args.size, "first_paint_s": first_paint, "full_detail_s": sharp}
    print(f"slide {slide_path.name}: {args.size:,} x {args.size:,} px, window 1600 x 1000 (offscreen), "
          f"OS file cache warm; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"open -> first painted view: {first_paint * 1000:7.0f} ms   (target <= {FIRST_PAINT_S * 1000:.0f} ms: "
          f"{verdict(first_paint <= FIRST_PAINT_S)})")
    print(f"open -> every visible tile at full detail: {sharp * 1000:7.0f} ms")

    # background analysis + live heat map
    analysis = None
    rng = np.random.default_rng(0)
    if not args.no_analysis:
        t = time.perf_counter()
        panel = window.analysis
        if not panel.set_bundle(vits16_bundle(work)):
            raise SystemExit("could not use the benchmark's model bundle")
        panel.analyse_slide()  # what Analysis › Analyse Slide does: its own process, live heat map, score panel
        if not spin(app, lambda: tiles_done(window) > 0, 300):
            raise SystemExit("the analysis did not start")
        analysis = panel
        print(f"analysis: random ViT-S/16 bundle in the viewer's analysis process (pid {panel.host.pid}), "
              f"{len(panel._run.boxes):,} cell-area tiles, first batch after {time.perf_counter() - t:.1f} s")
    from core.slides import detect_foreground

    foreground = detect_foreground(view.source.slide)
    points = cell_points(foreground, args.size, 2, rng)

    def tour(label: str) -> dict:
        view.source.cache.clear()
        view.zoom_to_fit()
        spin(app, lambda: view.is_complete() and view.source.is_idle(), 30)
        pids = (os.getpid(), window.analysis.host.pid if analysis is not None else None)
        r = run_tour(app, window, tour_steps(view, args.size, points), pids, args.stall_stacks)
        print(f"{label}: {r['steps']} steps in {r['seconds']:.1f} s, {r['frames']} frames ({r['fps']:.0f} fps)")
        ran, waited, blocked = r["stall_ran_waited_blocked_ms"]
        print(f"  longest event-loop stall {r['stall_ms']:6.1f} ms   (target <= {STALL_MS:.0f}: "
              f"{verdict(r['stall_ms'] <= STALL_MS)}); the GUI thread ran {ran:.1f} ms of it, waited for a CPU "
              f"{waited:.1f} ms, was blocked {blocked:.1f} ms")
        print(f"  p95 frame time          {r['frame_p95_ms']:6.1f} ms   (target <= {P95_MS:.0f}: "
              f"{verdict(r['frame_p95_ms'] <= P95_MS)})")
        print(f"  frame max {r['frame_max_ms']:.1f} ms; paint p95 {r['paint_p95_ms']:.1f} ms "
              f"(GUI-thread CPU in paint p95 {r['paint_cpu_p95_ms']:.1f} ms), max {r['paint_max_ms']:.1f} ms; "
              f"heartbeat p99 gap {r['heartbeat_p99_ms']:.1f} ms; GUI thread busy "
              f"{r['gui_thread_cpu_share'] * 100:.0f}% of the tour, waiting for a CPU "
              f"{r['gui_thread_runqueue_share'] * 100:.0f}%; full garbage collections during the tour: "
              f"{r['full_gcs_during_tour']}")
        print("  busiest threads: " + "; ".join(r["busiest_threads"]))
        if r["stall_stacks"]:
            print("  where the GUI thread was while the heartbeat was late (samples every 4 ms):")
            for line in r["stall_stacks"]:
                print("    " + line)
        return r

    load = "while the analysis runs" if analysis else "no analysis"
    results["tour"] = tour(f"tour ({load})")

    # 100k detections
    t = time.perf_counter()
    centres = cell_points(foreground, args.size, args.detections, rng)
    wh = rng.uniform(30, 90, (args.detections, 2))
    boxes = np.column_stack([centres - wh / 2, wh])
    objects = ObjectSet.from_boxes(boxes, rng.integers(0, len(CLASS_NAMES), args.detections), CLASS_NAMES,
                                   [c.color for c in CLASSES], name="Detections")
    layer = VectorLayer(objects, f"{args.detections:,} detections")
    view.add_layer(layer)
    print(f"{args.detections:,} detections built and indexed in {time.perf_counter() - t:.1f} s")
    results["tour_detections"] = tour(f"tour with {args.detections:,} detections ({load})")
    results["detections"] = args.detections

    if analysis is not None:
        done = tiles_done(window)
        analysis.cancel()
        spin(app, lambda: not analysis.is_running(), 60)
        results["analysis_tiles_done"] = done
        print(f"analysis: {done:,} tiles done during the run, then cancelled")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes competing for the CPUs inflate "
          "wall-clock times; GUI-thread CPU times are what the viewer itself costs)")
    window.close()
    from cervixfm_app.viewer.analysis_host import stop_analysis_host

    stop_analysis_host()  # as cervixfm-viewer does when its window closes
    shutil.rmtree(home, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
