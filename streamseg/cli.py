"""The ``streamseg`` command line: run / validate / info, plus model and training tools.

Exit codes: 0 success, 1 unexpected error (traceback logged), 2 user error (bad config,
missing file, unusable input: one line per problem on stderr, no traceback), 130 interrupt.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from streamseg import __version__
from streamseg.errors import ConfigError, UserError

log = logging.getLogger("streamseg.cli")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
EXIT_OK, EXIT_FAIL, EXIT_USER, EXIT_INTERRUPT = 0, 1, 2, 130


def _redact(text: str) -> str:
    try:
        from streamseg.urls import redact  # noqa: PLC0415 (written by another helper)
    except ImportError:
        return text
    return redact(text)


class RedactingFormatter(logging.Formatter):
    """Log formatter that hides URL credentials in messages and tracebacks alike."""

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


_our_handlers: list[logging.Handler] = []


def setup_logging(level: int | str = logging.INFO, file: str | Path | None = None) -> None:
    """(Re)install streamseg's root handlers: stderr, plus ``file`` when given.

    Safe to call more than once (tests call ``main`` repeatedly): previous handlers are replaced.
    """
    root = logging.getLogger()
    for h in _our_handlers:
        root.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()
    _our_handlers.clear()
    fmt = RedactingFormatter(LOG_FORMAT, LOG_DATEFMT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    _our_handlers.append(handler)
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(file, encoding="utf-8")
        fh.setFormatter(fmt)
        _our_handlers.append(fh)
    for h in _our_handlers:
        root.addHandler(h)
    root.setLevel(level)
    # Chatty third-party loggers stay at WARNING even with -v.
    for name in ("PIL", "matplotlib", "urllib3", "h5py", "numexpr"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _err(lines: Sequence[str]) -> None:
    for line in lines:
        sys.stderr.write(f"streamseg: error: {_redact(line)}\n")
    sys.stderr.flush()


def _not_available(cmd: str, exc: ImportError, module: str) -> int:
    """A subcommand whose module is not part of this build (or lacks a dependency)."""
    missing = getattr(exc, "name", None) or ""
    if missing and not (missing == module or module.startswith(missing + ".") or missing.startswith("streamseg")):
        # The module exists but a third-party package it needs is not installed.
        raise UserError(f"streamseg {cmd} needs the Python package '{missing}', which is not installed; "
                        f"allowed: pip install it (see README)") from None
    raise UserError(f"streamseg {cmd} is not available in this build") from None


def _lazy(cmd: str, module: str, attr: str) -> Callable:
    """Import ``module.attr`` when the subcommand runs, mapping a missing module to exit 2."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        _not_available(cmd, e, module)
    fn = getattr(mod, attr, None)
    if fn is None:
        raise UserError(f"streamseg {cmd} is not available in this build")
    return fn


# --------------------------------------------------------------------------- handlers


def _cmd_run(args: argparse.Namespace) -> int:
    from streamseg.config import load_pipeline

    cfg = load_pipeline(args.pipeline, overrides=args.set, check_files=True)
    out_dir = Path(args.out) if args.out else None
    log_file = cfg.logging.file
    if log_file and out_dir is not None and not Path(log_file).is_absolute():
        log_file = str(out_dir / log_file)  # --out collects everything the run writes
    setup_logging(logging.DEBUG if args.verbose else cfg.logging.level, log_file)
    run_pipeline = _lazy("run", "streamseg.pipeline", "run_pipeline")
    code = run_pipeline(cfg, out_dir=out_dir, config_path=Path(args.pipeline))
    return EXIT_OK if code is None else int(code)


def _cmd_validate(args: argparse.Namespace) -> int:
    from streamseg.config import load_pipeline, summary_lines

    cfg = load_pipeline(args.pipeline, overrides=args.set, check_files=True)
    out = [f"{args.pipeline}: valid"] + [f"  {line}" for line in summary_lines(cfg)]
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from streamseg.info import format_text, gather

    info = gather()
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(format_text(info) + "\n")
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    fn = _lazy("convert", "streamseg.models.convert", "convert_main")
    return int(fn(args.src, args.dst, args.variant) or 0)


def _cmd_export(args: argparse.Namespace) -> int:
    fn = _lazy("export", "streamseg.models.onnx_export", "export_main")
    return int(fn(args) or 0)


def _cmd_bench(args: argparse.Namespace) -> int:
    fn = _lazy("bench", "streamseg.bench", "bench_main")
    return int(fn(args) or 0)


def _cmd_train(args: argparse.Namespace) -> int:
    fn = _lazy("train", "streamseg.train.cli", "train_main")
    return int(fn(args.config, args.resume, list(args.set)) or 0)


def _cmd_eval(args: argparse.Namespace) -> int:
    fn = _lazy("eval", "streamseg.train.cli", "eval_main")
    return int(fn(args.config, args.weights, list(args.set), args.json) or 0)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (exposed for docs and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging (overrides logging.level)")
    sets = argparse.ArgumentParser(add_help=False)
    sets.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override a config key, e.g. --set detector.conf=0.4 --set sinks.0.path=x.mp4 "
                           "(value parsed as YAML; repeatable)")

    p = argparse.ArgumentParser(
        prog="streamseg",
        description="Per-person instance segmentation of live and recorded video.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"streamseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", parents=[common, sets], help="run a pipeline YAML",
                       description="Run a pipeline: source -> detector -> model -> smoothing -> sinks.")
    r.add_argument("pipeline", metavar="PIPELINE.yaml")
    r.add_argument("--out", metavar="DIR", help="write every output file (and metrics.json) under DIR")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", parents=[common, sets], help="check a pipeline YAML without running it",
                       description="Validate a pipeline: exit 0 with a summary, or 2 with one line per problem.")
    v.add_argument("pipeline", metavar="PIPELINE.yaml")
    v.set_defaults(func=_cmd_validate)

    i = sub.add_parser("info", parents=[common], help="versions, devices, encoders, input formats, display")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_cmd_info)

    c = sub.add_parser("convert", parents=[common], help="convert a weights file to a streamseg checkpoint")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    c.add_argument("--variant", metavar="NAME", default=None, help="model variant (b0, b1, b7, b0-enhanced, ...)")
    c.set_defaults(func=_cmd_convert)

    e = sub.add_parser("export", parents=[common], help="export a checkpoint or registry name to ONNX")
    e.add_argument("checkpoint", metavar="CKPT_OR_NAME")
    e.add_argument("output", metavar="OUT.onnx")
    e.add_argument("--height", type=int, default=640, help="input height (multiple of 32)")
    e.add_argument("--width", type=int, default=640, help="input width (multiple of 32)")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--int8", action="store_true", help="also write an INT8-quantised model")
    e.add_argument("--calib-video", metavar="PATH", default=None, help="video whose frames calibrate INT8")
    e.add_argument("--calib-frames", type=int, default=32)
    e.add_argument("--dilation", type=int, default=0)
    e.set_defaults(func=_cmd_export)

    b = sub.add_parser("bench", parents=[common], help="benchmarks: bench {model,pipeline,live} [...]",
                       description="Benchmarks. Everything after `bench` goes to the bench module.")
    b.add_argument("rest", nargs=argparse.REMAINDER, metavar="{model,pipeline,live} ...")
    b.set_defaults(func=_cmd_bench)

    t = sub.add_parser("train", parents=[common, sets], help="train a model from a training config")
    t.add_argument("config", metavar="CONFIG")
    t.add_argument("--resume", metavar="CKPT", default=None)
    t.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", parents=[common, sets], help="evaluate weights with a training config")
    ev.add_argument("config", metavar="CONFIG")
    ev.add_argument("--weights", metavar="CKPT", required=True)
    ev.add_argument("--json", metavar="OUT", default=None, help="write the metrics as JSON here")
    ev.set_defaults(func=_cmd_eval)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamseg`` console script and ``python -m streamseg``."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # argparse already printed usage / the error
        return int(e.code) if isinstance(e.code, int) else EXIT_USER
    args.verbose = getattr(args, "verbose", False)
    if args.command == "bench":
        args.mode = args.rest[0] if args.rest and not args.rest[0].startswith("-") else None
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args))
    except ConfigError as e:
        _err(e.lines)
        return EXIT_USER
    except UserError as e:
        _err(str(e).splitlines() or [type(e).__name__])
        return EXIT_USER
    except KeyboardInterrupt:
        log.warning("interrupted")
        return EXIT_INTERRUPT
    except BrokenPipeError:  # `streamseg info | head`
        return EXIT_OK
    except SystemExit as e:  # a subcommand module's own argparse (bench) said "usage"
        return int(e.code) if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USER)
    except Exception:
        log.exception("streamseg %s failed with an unexpected error", args.command)
        return EXIT_FAIL
