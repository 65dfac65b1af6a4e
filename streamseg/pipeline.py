"""``streamseg run``: source -> detect -> segment -> smooth -> sinks, with run control and metrics.

The decoder runs in its own thread (inside the source); this loop does detection, segmentation,
smoothing and writing. SIGINT/SIGTERM stop the source, drain what is already decoded, finalise
every sink and write metrics.json. Exit codes: 0 done, 2 config/input error (raised as UserError
before anything starts), 130 interrupted by SIGINT, 143 by SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .errors import UserError
from .metrics import RunMetrics, write_json
from .records import Detections, Frame, FrameResult
from .urls import redact

log = logging.getLogger("streamseg.pipeline")

UNTRAINED_WATERMARK = "UNTRAINED WEIGHTS - masks are meaningless"


def _out_path(path: str | None, out_dir: Path | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if out_dir is None or p.is_absolute() else out_dir / p


def build_model(cfg: PipelineConfig) -> tuple[Any, str | None]:
    """The person model (torch module or ORT backend) and a watermark when it is untrained."""
    from .models import create_model, load_checkpoint
    from .models.weights import resolve_weights

    m = cfg.model
    if m.backend == "onnxruntime":
        from .models.ort_backend import OrtPersonModel

        path = m.onnx or str(resolve_weights(m.weights) or "")
        if not path:
            raise UserError("model.onnx: backend onnxruntime needs an .onnx file (see `streamseg export`)")
        return OrtPersonModel(path, threads=cfg.runtime.threads), None
    path = resolve_weights(m.weights)
    if path is None:
        log.warning("model.weights is 'untrained': the person model has RANDOM weights; masks are meaningless "
                    "and every output frame is watermarked. Point model.weights at a checkpoint for real masks.")
        return create_model(m.name, roi_size=m.roi_size, mask_size=m.mask_size), UNTRAINED_WATERMARK
    if path.suffix.lower() == ".onnx":
        from .models.ort_backend import OrtPersonModel

        log.info("model.weights %s is an ONNX export: running it with ONNX Runtime", path)
        return OrtPersonModel(str(path), threads=cfg.runtime.threads), None
    model = load_checkpoint(path, roi_size=m.roi_size, mask_size=m.mask_size)
    if model.spec.name != m.name:
        log.warning("model.weights holds a %s model; using it (model.name %s ignored)", model.spec.name, m.name)
    return model, None


def build_detector(cfg: PipelineConfig):
    from .detect import detector_from_config

    return detector_from_config(cfg.detector)


def reconnect_policy(r: Any):
    """The source/sink ReconnectPolicy for a config ``reconnect`` section."""
    from .sources import ReconnectPolicy

    return ReconnectPolicy(enabled=r.enabled, backoff_base_s=r.backoff_base_s, backoff_max_s=r.backoff_max_s,
                           max_attempts=r.max_attempts, stall_timeout_s=r.stall_timeout_s)


def build_source(cfg: PipelineConfig):
    from .sources import open_source

    s = cfg.source
    policy = reconnect_policy(s.reconnect)
    size = s.size_wh
    return open_source(s.uri, kind=s.type, format=s.format, options=dict(s.options), live=s.live,
                       queue_size=s.queue_size, transport=s.transport, open_timeout_s=s.open_timeout_s,
                       read_timeout_s=s.read_timeout_s, reconnect=policy, max_frames=s.max_frames, loop=s.loop,
                       size=size, fps=s.fps)


class _VideoSink:
    """Adapter: annotate the frame, then write it to an MP4 or RTSP sink."""

    def __init__(self, kind: str, sink: Any, annotator: Any, path: str):
        self.kind, self.sink, self.annotator, self.path = kind, sink, annotator, path

    def write(self, result: FrameResult, fps: float | None = None) -> None:
        self.sink.write(result.frame, self.annotator.annotate(result.frame.image, result, fps=fps))

    def close(self) -> None:
        self.sink.close()

    @property
    def outputs(self) -> list[str]:
        return [self.path]


def build_sinks(cfg: PipelineConfig, info: Any, out_dir: Path | None, metrics: RunMetrics) -> list[Any]:
    from .annotate import Annotator

    sinks: list[Any] = []
    fps = info.fps or Fraction(25)
    try:
        for sc in cfg.sinks:
            if sc.type == "video":
                from .sinks.video import VideoFileSink

                ann = Annotator(alpha=sc.alpha, draw_boxes=sc.draw_boxes, draw_ids=sc.draw_ids, draw_fps=sc.draw_fps)
                path = _out_path(sc.path, out_dir)
                audio = cfg.source.uri if sc.audio and info.has_audio and info.kind == "file" else None
                sink = VideoFileSink(path, width=info.width, height=info.height, fps=fps, time_base=info.time_base,
                                     codec=sc.codec, crf=sc.crf, preset=sc.preset, audio_source=audio)
                sinks.append(_VideoSink("video", sink, ann, str(path)))
            elif sc.type == "rtsp":
                from .sinks.rtsp import RtspSink

                policy = reconnect_policy(sc.reconnect)

                def published(frame: Frame, t: float) -> None:
                    if frame.capture_time:
                        metrics.publish_latency.add(max(0.0, t - frame.capture_time), t)

                sink = RtspSink(sc.url, width=info.width, height=info.height, fps=fps, transport=sc.transport,
                                preset=sc.preset, gop=sc.gop, bitrate=sc.bitrate, reconnect=policy,
                                mux_timeout_s=sc.mux_timeout_s, on_published=published)
                sinks.append(_VideoSink("rtsp", sink, Annotator(), redact(sc.url)))
            elif sc.type == "masks":
                from .sinks.masks import MaskFilesSink

                sinks.append(MaskFilesSink(sc.png_dir, sc.rle_jsonl, sc.threshold, out_dir=out_dir))
            elif sc.type == "events":
                from .sinks.events import EventsSink

                sinks.append(EventsSink(sc.path, out_dir=out_dir))
            elif sc.type == "display":
                from .sinks.display import DisplaySink

                sinks.append(DisplaySink(sc.window, out_dir=out_dir))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


class Pipeline:
    """One run of a pipeline config. ``run()`` returns the process exit code."""

    def __init__(self, cfg: PipelineConfig, out_dir: Path | None = None, config_path: str | None = None):
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir else None
        self.config_path = config_path
        self.stop_signal: int | None = None
        self._abort = False
        self._stop_requested = False
        self.source = None
        self.metrics = RunMetrics(cfg.metrics.latency_window_s)
        self._callbacks: list[Callable[[FrameResult], None]] = []

    def add_frame_callback(self, fn: Callable[[FrameResult], None]) -> None:
        """Call ``fn(result)`` for every finished frame, after the sinks wrote it and before the
        run's metrics count it (so a callback may e.g. restart the latency windows). Runs on the
        pipeline's thread: keep it short. An exception in it stops the run like any other error."""
        self._callbacks.append(fn)

    def stop(self) -> None:
        """Stop a running pipeline from another thread (finalises outputs; exit code stays 0)."""
        self._stop_requested = True
        if self.source is not None:
            self.source.stop()

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is not None:
            self._abort = True  # second signal: stop draining, just finalise
            return
        self.stop_signal = signum
        log.warning("%s received: draining queued frames and finalising outputs (send again to skip draining)",
                    signal.Signals(signum).name)
        if self.source is not None:
            self.source.stop()

    def _install_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, self._on_signal)
        return old

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        import torch

        from .segment import Segmenter, SegmenterOptions
        from .smooth import FlickerMeter, MaskSmoother

        cfg = self.cfg
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        self.source = None
        model, watermark = build_model(cfg)
        rt, m = cfg.runtime, cfg.model
        want_fg = False
        if hasattr(model, "input_hw") and getattr(model, "input_hw", None):
            input_size = tuple(model.input_hw)
        else:
            input_size = tuple(m.input_size)
        if isinstance(model, torch.nn.Module):
            model = _optimize(model, rt)
        segmenter = Segmenter(model, SegmenterOptions(
            device=rt.device, precision=rt.precision, input_size=input_size, resize=m.resize, threshold=m.threshold,
            max_rois=m.max_rois, cuda_streams=rt.cuda_streams, pinned_memory=rt.pinned_memory,
            channels_last=rt.channels_last, dilation=m.dilation, want_foreground=want_fg))
        detector = build_detector(cfg)
        smoother = MaskSmoother(alpha=cfg.smoothing.alpha, enabled=cfg.smoothing.enabled, max_age=cfg.smoothing.max_age)
        roi_hw = tuple(getattr(getattr(model, "spec", None), "roi_size", m.roi_size))
        flicker_raw, flicker_out = FlickerMeter(roi_hw=roi_hw), FlickerMeter(roi_hw=roi_hw)
        self.source = build_source(cfg)
        old_handlers = self._install_signals()
        sinks: list[Any] = []
        progress = None
        try:
            self.source.start()
            info = self.source.info
            log.info("source %s: %sx%s @ %s fps (%s, %s)", info.uri, info.width, info.height,
                     float(info.fps) if info.fps else "?", info.kind, "live" if info.is_live else "file")
            sinks = build_sinks(cfg, info, self.out_dir, self.metrics)
            progress = _Progress(cfg, info, self.metrics, lambda: self.source.stats.frames_dropped)
            batches = self._batches(detector)
            for frames, masks_list in segmenter.stream(batches):
                self.metrics.stage("segment", segmenter.last_seconds)
                for frame, masks_raw in zip(frames, masks_list):
                    self._finish_frame(frame, masks_raw, smoother, flicker_raw, flicker_out, sinks, watermark)
                    progress.update()
            if info.is_live and self.stop_signal is None and not self._stop_requested:
                log.warning("live source ended: %s", info.uri)
        finally:
            t_close = time.perf_counter()
            for s in sinks:
                try:
                    s.close()
                except Exception as e:  # noqa: BLE001 - finalise the others anyway
                    log.error("closing sink %s failed: %s", type(s).__name__, e)
            self.metrics.stage("finalise", time.perf_counter() - t_close)
            if progress is not None:
                progress.close()
            self.source.close()
            detector.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        summary = self._summary(sinks, flicker_raw, flicker_out, watermark)
        mpath = _out_path(cfg.metrics.path, self.out_dir)
        write_json(mpath, summary)
        self._report(sinks, mpath, summary)
        if self.stop_signal == signal.SIGTERM:
            return 143
        return 130 if self.stop_signal is not None else 0

    def _batches(self, detector: Any) -> Iterator[tuple[list[Frame], list[Detections]]]:
        """Frames with their detections, gathered into batches of up to runtime.batch_frames."""
        n = self.cfg.runtime.batch_frames
        every = self.cfg.detector.every_n
        last = Detections()
        while not self._abort:
            t0 = time.perf_counter()
            frame = self.source.read(timeout=0.5)
            if frame is None:
                if self.source.ended or self.stop_signal is not None or self._stop_requested:
                    break
                continue
            frames = [frame]
            while len(frames) < n:
                nxt = self.source.read(timeout=0)
                if nxt is None:
                    break
                frames.append(nxt)
            self.metrics.stage("read_wait", time.perf_counter() - t0)
            self.metrics.frames_in += len(frames)
            dets = []
            for f in frames:
                t1 = time.perf_counter()
                if f.index % every == 0 or not len(last):
                    last = detector.detect(f)
                dets.append(last)
                self.metrics.stage("detect", time.perf_counter() - t1)
            yield frames, dets

    def _finish_frame(self, frame, masks_raw, smoother, flicker_raw, flicker_out, sinks, watermark):
        hw = (frame.height, frame.width)
        dets = masks_raw.detections
        self.metrics.persons += len(dets)
        t0 = time.perf_counter()
        masks = smoother.smooth(masks_raw, frame.index)
        self.metrics.stage("smooth", time.perf_counter() - t0)
        flicker_raw.update(masks_raw, hw, frame.index)
        flicker_out.update(masks, hw, frame.index)
        result = FrameResult(frame, dets, masks, watermark=watermark)
        fps = self.metrics.fps()
        for s in sinks:
            t1 = time.perf_counter()
            if isinstance(s, _VideoSink):
                s.write(result, fps)
            else:
                s.write(result)
            self.metrics.stage(f"sink_{getattr(s, 'kind', type(s).__name__)}", time.perf_counter() - t1)
        for fn in self._callbacks:
            fn(result)
        self.metrics.frame_done(frame.capture_time)

    def _summary(self, sinks, flicker_raw, flicker_out, watermark) -> dict[str, Any]:
        st = self.source.stats
        for reason, count in st.dropped.items():
            self.metrics.dropped[f"source_{reason}"] += count
        extra: dict[str, Any] = {
            "source": {"uri": self.source.info.uri if self.source.info else redact(self.cfg.source.uri),
                       "frames_decoded": st.frames_decoded, "outages": st.outages, "reconnects": st.reconnects},
            "flicker": {"raw": flicker_raw.summary(), "smoothed": flicker_out.summary(),
                        "smoothing_enabled": self.cfg.smoothing.enabled},
            "interrupted": self.stop_signal is not None,
            "untrained_weights": watermark is not None,
            "outputs": [str(o) for s in sinks for o in s.outputs],
        }
        for s in sinks:
            if getattr(s, "kind", "") == "rtsp":
                rs = s.sink.stats
                extra["rtsp_out"] = {"url": s.path, "frames_published": rs.frames_published, "dropped": rs.dropped,
                                     "outages": rs.outages, "reconnects": rs.reconnects}
                for reason, count in rs.dropped.items():
                    self.metrics.dropped[f"rtsp_out_{reason}"] += count
        return self.metrics.summary(extra)

    def _report(self, sinks, mpath: Path, summary: dict[str, Any]) -> None:
        import sys

        lines = [f"processed {summary['frames_out']}/{summary['frames_in']} frames at {summary['fps']:.2f} fps, "
                 f"dropped {summary['frames_dropped']}"]
        for s in sinks:
            for o in s.outputs:
                lines.append(f"  {getattr(s, 'kind', type(s).__name__.replace('Sink', '').lower())}: {o}")
        lines.append(f"  metrics: {mpath}")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _optimize(model: Any, runtime: Any) -> Any:
    """Inference-only speedups that keep outputs unchanged (see streamseg.models.fuse).

    BN folded + channels_last + no aux heads everywhere; on a CPU in fp32 also Winograd 3x3
    convolutions (``runtime.winograd``). Measured by ``streamseg bench model`` on a 2-core CPU:
    about 0.75x the plain model's time without Winograd and about 0.41x with F(4x4, 3x3).
    """
    from .models.fuse import optimize_for_inference

    return optimize_for_inference(
        model, fold_bn=True, channels_last=True, with_aux=False, winograd=winograd_tile(runtime)
    )


def winograd_tile(runtime: Any) -> int | None:
    """The Winograd tile size for a ``runtime`` section: 4 or 2 when the model runs on a CPU in
    fp32 (fp16 there falls back to fp32) with a C compiler at hand, else None (off, CUDA, bf16,
    or no compiler)."""
    from .segment import effective_precision, resolve_device

    device = resolve_device("auto").type if runtime.device == "auto" else runtime.device
    if runtime.winograd == "off" or device.startswith("cuda"):
        return None
    if effective_precision(runtime.precision, cuda=False) != "fp32":
        return None
    from .models.winograd import kernel_available

    if not kernel_available():
        if runtime.winograd != "auto":
            log.warning("runtime.winograd: %s needs a C compiler; using direct convolutions", runtime.winograd)
        return None
    return 2 if runtime.winograd == "f2" else 4


class _Progress:
    """tqdm bar for files (frames, FPS, ETA); a periodic log line for live sources."""

    def __init__(self, cfg: PipelineConfig, info: Any, metrics: RunMetrics, source_dropped: Any = lambda: 0):
        mode = cfg.logging.progress
        if mode == "auto":
            mode = "status" if info.is_live else "bar"
        self.mode, self.metrics, self.info, self.source_dropped = mode, metrics, info, source_dropped
        self.interval = cfg.logging.status_interval_s
        self.last = time.time()
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            total = info.frame_count
            if cfg.source.max_frames:
                total = min(total or cfg.source.max_frames, cfg.source.max_frames)
            self.bar = tqdm(total=total, unit="frame", desc="streamseg", dynamic_ncols=True, mininterval=1.0)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
        elif self.mode == "status" and time.time() - self.last >= self.interval:
            self.last = time.time()
            lat = self.metrics.latency.all
            p95 = sorted(lat)[int(0.95 * (len(lat) - 1))] * 1e3 if lat else float("nan")
            log.info("frames %d, %.2f fps, dropped %d, latency p95 %.0f ms", self.metrics.frames_out,
                     self.metrics.fps(), sum(self.metrics.dropped.values()) + self.source_dropped(), p95)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pipeline(cfg: PipelineConfig, out_dir: Path | None = None, config_path: str | None = None) -> int:
    """Entry point used by ``streamseg run``."""
    return Pipeline(cfg, out_dir, config_path).run()
