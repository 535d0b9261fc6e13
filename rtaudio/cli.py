"""``rtaudio``: one entry point for the runtime (run, tag, devices, config) and later the training side."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rtaudio import __version__
from rtaudio.contract.files import EVAL_DIR

if TYPE_CHECKING:
    from rtaudio.config.site import SiteConfig

log = logging.getLogger("rtaudio")

EXIT_CONFIG = 2


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for chatty in ("amqtt", "transitions"):  # the embedded broker's libraries log every state change
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load_config(path: Path) -> SiteConfig | None:
    """The checked site, or None after printing every problem (``error: ...``); warnings print as ``warning: ...`` either way."""
    from rtaudio.config.load import load_site_config
    from rtaudio.config.loader import ConfigError

    warnings: list[str] = []
    try:
        return load_site_config(path, warnings=warnings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None
    finally:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from rtaudio.runtime.engines import EngineError
    from rtaudio.runtime.site import run_site

    config = _load_config(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        return run_site(config, duration_s=args.duration, config_path=Path(args.config))
    except EngineError as exc:
        print(f"error: engine: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except (ValueError, OSError, RuntimeError) as exc:
        # What only running can find (a port taken since the check, a device gone, an outbox that will
        # not open): one line naming the part, as the message does, and exit 2. The traceback is for
        # --log-level debug; other exception types are bugs and keep theirs.
        log.debug("run failed", exc_info=True)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        log.debug("run failed", exc_info=True)  # ONNX Runtime's own types (a text head that will not load), not ValueError/RuntimeError
        print(f"error: onnxruntime: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_reload(args: argparse.Namespace) -> int:
    """Check site.yaml, then send SIGHUP to the ``rtaudio run`` of that site (its pid file, or ``--pid``)."""
    import os
    import signal

    from rtaudio.runtime.site import pid_path

    config = _load_config(args.config)
    if config is None:
        print("error: not reloaded: the running site keeps its settings", file=sys.stderr)
        return EXIT_CONFIG
    pid = args.pid
    if pid is None:
        path = pid_path(config)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"error: no running rtaudio for site {config.site}: cannot read its pid file {path} ({why}); is it running? else pass --pid", file=sys.stderr)
            return EXIT_CONFIG
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():  # Linux: make sure the pid is rtaudio's, not a reused one
        try:
            if b"rtaudio" not in cmdline.read_bytes():
                print(f"error: process {pid} is not rtaudio (a stale pid file?); nothing sent", file=sys.stderr)
                return EXIT_CONFIG
        except OSError:
            print(f"error: no process {pid} (rtaudio for site {config.site} is not running; a stale pid file?)", file=sys.stderr)
            return EXIT_CONFIG
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"error: no process {pid} (rtaudio for site {config.site} is not running; a stale pid file?)", file=sys.stderr)
        return EXIT_CONFIG
    except PermissionError:
        print(f"error: not allowed to signal process {pid} (run reload as the user running rtaudio)", file=sys.stderr)
        return EXIT_CONFIG
    print(f"reload: sent SIGHUP to rtaudio (pid {pid}, site {config.site}); its log says what was applied")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz (or /readyz) of a running site's HTTP server: exit 0 when healthy, 1 when not or unreachable.
    For Docker's HEALTHCHECK and scripts; the body (the failing checks) goes to stdout."""
    import base64
    import urllib.error
    import urllib.request

    from rtaudio.config.load import load_site_config
    from rtaudio.config.loader import ConfigError
    from rtaudio.config.site import split_listen

    token = os.environ.get("RTAUDIO_HTTP_TOKEN")
    url = args.url
    if url is None:
        try:
            config = load_site_config(args.config, check_model=False, warnings=[])
        except ConfigError as exc:
            print(f"error: {exc.problems[0] if exc.problems else exc}", file=sys.stderr)
            return EXIT_CONFIG
        if config.http is None:
            print(f"error: {args.config} has no http: section; the health endpoints need http: {{listen: HOST:PORT}}", file=sys.stderr)
            return EXIT_CONFIG
        host, port = split_listen(config.http.listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard listen answers on loopback
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        token = config.http.resolved_token() or token
    request = urllib.request.Request(url.rstrip("/") + ("/readyz" if args.ready else "/healthz"))
    if token:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"rtaudio:{token}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace") or f"HTTP {exc.code}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"error: {request.full_url} unreachable: {reason}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if not isinstance(exc, OSError) or exc.strerror is None or exc.filename is None else f"{exc.filename}: {exc.strerror}"


def cmd_tag(args: argparse.Namespace) -> int:
    from rtaudio.contract import ContractError
    from rtaudio.runtime.offline import tag_files

    try:
        return tag_files(args.files, args.model, engine=args.engine, as_json=args.json, top_k=args.top_k, floor=args.floor)
    except ContractError as exc:
        print(f"error: model: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_devices(args: argparse.Namespace) -> int:
    from rtaudio.runtime.sources.microphone import list_input_devices

    try:
        devices = list_input_devices()
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    if not devices:
        print("no input devices found")
    for dev in devices:
        mark = "*" if dev.get("is_default") else " "
        print(f"{mark}{dev['index']:>3}  {dev['name']:<40} {dev['max_input_channels']:>2} ch  {dev['default_samplerate']:>7.0f} Hz  {dev['hostapi']}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load_config(args.file)
    if config is None:
        return EXIT_CONFIG
    kinds = ", ".join(f"{s.id} ({s.type})" for s in config.sources)
    print(f"ok: site {config.site}, model {config.model}, engine {config.engine.type}, sources: {kinds}")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from rtaudio.config.site import SiteConfig

    print(json.dumps(SiteConfig.model_json_schema(), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import shlex

    from rtaudio.contract import ContractError
    from rtaudio.train.data import DataError
    from rtaudio.train.evaluate import evaluate

    out = args.out or args.model / EVAL_DIR
    command = shlex.join(
        [
            "rtaudio",
            "eval",
            "--model",
            str(args.model),
            "--data",
            str(args.data),
            "--split",
            args.split,
            "--out",
            str(out),
            *(a for c in args.compare for a in ("--compare", str(c))),
            *(["--no-java-metrics"] if args.no_java_metrics else []),
            *(["--baselines"] if args.baselines else []),
        ]
    )
    try:
        summary = evaluate(
            args.model,
            args.data,
            split=args.split,
            compare=args.compare,
            out=out,
            command=command,
            external_metrics=not args.no_java_metrics,
            baselines=args.baselines,
            teacher_cache=args.teacher_cache,
        )
    except (ContractError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for row in summary["ablation"]:
        print(f"{row['name']:<48} mAP {row['map']:.3f}  micro-F1 {row['micro_f1']:.3f}  macro-F1 {row['macro_f1']:.3f}")
    for text in summary.get("text", []):
        captions, retrieval, zero = text.get("captions"), text.get("retrieval"), text.get("zero_shot")
        parts = [
            f"CIDEr-D {captions['cider_d']:.3f}  BLEU-4 {captions['bleu_4']:.3f}" if captions else "",
            f"R@1 t2a {retrieval['t2a_r@1']:.3f} a2t {retrieval['a2t_r@1']:.3f}" if retrieval else "",
            f"zero-shot mAP {zero['map']:.3f}" if zero else "",
        ]
        print(f"{'text heads — ' + text['name']:<48} " + "  ".join(p for p in parts if p))
    print(f"report: {out / 'eval.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rtaudio.train.config import TrainConfigError, load_train_config
    from rtaudio.train.loop import train

    try:
        config = load_train_config(args.config, args.overrides)
    except TrainConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.resume:
        config.resume = True
    try:
        train(config)
    except (ValueError, FileNotFoundError) as exc:  # data and fine-tuning errors name what was wrong
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_data_debian(args: argparse.Namespace) -> int:
    from rtaudio.train.corpus.debian import CorpusError, build_corpus, which_tools
    from rtaudio.train.corpus.rules import PACKAGES

    missing = which_tools()
    if missing:
        print(f"error: data debian needs {', '.join(missing)} (Debian: apt-get install dpkg ffmpeg)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        summary = build_corpus(
            args.out, args.packages or PACKAGES, cache=args.cache, sample_rate=args.sample_rate, max_clip_s=args.max_clip_s, max_pieces=args.max_pieces
        )
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    pieces, packages, labels = cast(dict[str, int], summary["pieces"]), cast(list[str], summary["packages"]), cast(dict[str, dict[str, int]], summary["labels"])
    print(
        f"{pieces['labelled']} labelled and {pieces['unlabelled']} unlabelled pieces "
        f"({pieces['duplicates_dropped']} duplicates dropped) from {len(packages)} packages"
    )
    for label, counts in labels.items():
        print(f"  {label:<16} " + "  ".join(f"{split} {n}" for split, n in counts.items()))
    print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rtaudio.export.onnx import ExportError, export_checkpoint
    from rtaudio.tensorrt.ops import check_model
    from rtaudio.train.labels import BUILDING_LABELS, event_median_windows
    from rtaudio.train.parity_windows import synthetic_windows

    try:
        model_dir = export_checkpoint(
            args.checkpoint,
            args.out,
            args.id,
            args.version,
            args.window_s,
            opset=args.opset,
            simplify=not args.no_simplify,
            allow_unsupported=args.allow_unsupported,
            scenes=synthetic_windows,
            median_windows=event_median_windows(BUILDING_LABELS),
        )
    except (FileNotFoundError, ValueError) as exc:  # no or unusable checkpoint, or a window the model refuses
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info, extra = model_dir.info, model_dir.info.extra
    parity, fp16 = extra["export"]["parity"], extra["fp16"]
    print(
        f"exported {model_dir.path}: {info.model_id} {info.version}, {len(info.labels)} labels, window {info.window_s} s, "
        f"outputs scores [batch, {len(info.labels)}] + embedding [batch, {info.embedding_dim}]"
    )
    print(
        f"parity vs PyTorch ({parity['windows']} windows, batch {' and '.join(map(str, parity['batches']))}): "
        f"scores {parity['scores_max_abs_diff']:.2e}, embedding {parity['embedding_max_abs_diff']:.2e}"
    )
    print(f"FP16 safety: {len(fp16['fp32_nodes'])} node(s) stay FP32 (largest |x| {fp16['max_abs']:.3g} at {fp16['max_abs_node']})")
    print(check_model(model_dir.onnx_path).format())
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from rtaudio.contract import ContractError
    from rtaudio.tensorrt.build import BuildError, build_engine
    from rtaudio.tensorrt.calibration import CalibrationError
    from rtaudio.tensorrt.cuda import CudaError, NvidiaUnavailable

    try:
        plan = build_engine(args.model_dir, args.precision, args.max_batch, args.workspace_mb, args.calibration, args.timing_cache, args.out)
    except NvidiaUnavailable as exc:
        print(f"error: build-engine needs TensorRT and an NVIDIA GPU: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ContractError, CalibrationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BuildError, CudaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"plan: {plan}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from rtaudio.doctor import print_report, report_json, run_doctor

    checks = run_doctor(args.config)
    report = report_json(checks)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(checks)
    return 0 if report["ok"] else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from rtaudio.bench.report import print_report, write_json
    from rtaudio.bench.suite import run_bench
    from rtaudio.contract import ContractError
    from rtaudio.runtime.engines import EngineError

    options = {
        "--model": args.model,
        "--max-batch": args.max_batch,
        "--seconds": args.seconds,
        "--audio": args.audio,
        "--capacity-engine": args.capacity_engine,
        "--max-streams": args.max_streams,
        "--backlog": args.backlog,
    }
    flags = [f for f, on in (("--skip-capacity", args.skip_capacity), ("--skip-yardsticks", args.skip_yardsticks)) if on]
    command = shlex.join(
        [
            "rtaudio",
            "bench",
            *(a for k, v in options.items() if v is not None for a in (k, str(v))),
            *(["--backends", *args.backends] if args.backends else []),
            *flags,
        ]
    )
    try:
        result = run_bench(
            args.model,
            args.backends,
            args.max_batch,
            args.seconds,
            args.audio,
            args.capacity_engine,
            args.max_streams,
            args.backlog,
            args.skip_capacity,
            args.skip_yardsticks,
            command,
        )
    except (ContractError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print_report(result)
    if args.json is not None:
        write_json(result, args.json)
        print(f"JSON: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtaudio", description="Edge audio tagger: audio streams in, tags and events out over MQTT.")
    parser.add_argument("--version", action="version", version=f"rtaudio {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a site: sources -> model -> MQTT")
    run.add_argument("--config", "-c", type=Path, required=True, help="site.yaml")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds (tests, benchmarks)")
    run.set_defaults(func=cmd_run)

    reload = sub.add_parser("reload", help="make a running site re-read its site.yaml (SIGHUP; the file is checked first)")
    reload.add_argument("--config", "-c", type=Path, required=True, help="site.yaml (the site name finds the running process)")
    reload.add_argument("--pid", type=int, default=None, help="the process to signal, instead of the pid file rtaudio run writes")
    reload.set_defaults(func=cmd_reload)

    hc = sub.add_parser("healthcheck", help="ask a running site's /healthz (or /readyz): exit 0 healthy, 1 not (Docker HEALTHCHECK)")
    where = hc.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", type=Path, help="site.yaml (its http.listen and token)")
    where.add_argument("--url", help="the server's base URL, e.g. http://127.0.0.1:9108 (token from RTAUDIO_HTTP_TOKEN)")
    hc.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    hc.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    hc.set_defaults(func=cmd_healthcheck)

    tag = sub.add_parser("tag", help="tag audio files offline")
    tag.add_argument("files", nargs="+", type=Path)
    tag.add_argument("--model", type=Path, default=Path("engines/default"), help="model directory (default: engines/default)")
    tag.add_argument("--engine", default="auto", choices=["auto", "onnxruntime", "torch"])
    tag.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    tag.add_argument("--top-k", type=int, default=3)
    tag.add_argument("--floor", type=float, default=0.2, help="leave out labels scoring below this")
    tag.set_defaults(func=cmd_tag)

    train = sub.add_parser("train", help="train a model from train.yaml (torchrun for several GPUs/nodes)")
    train.add_argument("--config", "-c", type=Path, required=True, help="train.yaml")
    train.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one train.yaml key, dotted, value in YAML (e.g. captions.diffusion_weight=0.5); repeatable",
    )
    train.set_defaults(func=cmd_train)

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(func=cmd_devices)

    ev = sub.add_parser("eval", help="evaluate a model dir on a data split: metrics, ablation table, report")
    ev.add_argument("--model", type=Path, required=True, help="model directory (model.onnx, model.json, model.ckpt)")
    ev.add_argument("--data", type=Path, required=True, help="manifest CSV, or a YAML data spec (or a train.yaml)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--out", type=Path, default=None, help="report folder (default: MODEL/eval)")
    ev.add_argument("--compare", type=Path, action="append", default=[], metavar="DIR", help="another model dir for the same table (repeatable)")
    ev.add_argument("--no-java-metrics", action="store_true", help="skip METEOR and SPICE even where java and their jars are installed")
    ev.add_argument(
        "--baselines",
        action="store_true",
        help="also fit and score a linear probe on the pretrained (aisfx) embedding and hand-feature logistic regression on the train split",
    )
    ev.add_argument("--teacher-cache", type=Path, default=None, metavar="PATH", help="teacher embedding cache (default: beside the manifest)")
    ev.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="build training corpora")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SOURCE")
    deb = data_sub.add_parser("debian", help="real-audio corpus from sounds shipped in Debian packages (labelled by reviewed rules, split by package)")
    deb.add_argument("--out", "-o", type=Path, required=True, help="corpus folder (manifest.csv, unlabelled.csv, audio/, licences/)")
    deb.add_argument(
        "--package", dest="packages", action="append", default=[], metavar="NAME", help="a package to take (repeatable; default: every package the rules know)"
    )
    deb.add_argument("--cache", type=Path, default=None, help="where .deb files are downloaded (default: OUT/debs)")
    deb.add_argument("--sample-rate", type=int, default=16000, help="rate of the written audio (default 16000, the model rate)")
    deb.add_argument("--max-clip-s", type=float, default=10.0, help="longest piece cut from a file (default 10)")
    deb.add_argument("--max-pieces", type=int, default=3, help="most pieces cut from one file (default 3)")
    deb.set_defaults(func=cmd_data_debian)

    ex = sub.add_parser("export", help="checkpoint -> engines/NAME/: simplified ONNX with metadata, parity, TensorRT op check, FP16 list")
    ex.add_argument("checkpoint", type=Path, help="model.ckpt, or a training checkpoint (runs/NAME/checkpoints/last.ckpt)")
    ex.add_argument("--out", "-o", type=Path, required=True, help="model directory to write (engines/NAME/)")
    ex.add_argument("--id", default=None, help="model id (default: the checkpoint's training config, else the directory name)")
    ex.add_argument("--version", default=None, help="model version (default: the checkpoint's training config, else 0.1.0)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17: the newest TensorRT 8.6 parses)")
    ex.add_argument("--window-s", type=float, default=None, help="export at another window length (default: the model's)")
    ex.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    ex.add_argument("--allow-unsupported", action="store_true", help="write the model even if TensorRT's parser would refuse a node")
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser("build-engine", help="build this GPU's TensorRT plan for a model dir (needs TensorRT and a GPU)")
    be.add_argument("model_dir", type=Path, help="engines/NAME/ with model.onnx and model.json")
    be.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    be.add_argument("--max-batch", type=int, default=32, help="largest batch the plan serves (default 32)")
    be.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MB (default 1024)")
    be.add_argument("--calibration", type=Path, default=None, metavar="DIR", help="audio files for int8 calibration")
    be.add_argument("--timing-cache", type=Path, default=None, metavar="PATH", help="timing cache file (default: per GPU, beside the plan)")
    be.add_argument("--out", type=Path, default=None, metavar="DIR", help="plan directory (default: the model dir)")
    be.set_defaults(func=cmd_build_engine)

    doctor = sub.add_parser("doctor", help="what is present and usable here (GPU, TensorRT, ONNX Runtime, audio, broker), and why not")
    doctor.add_argument("--config", "-c", type=Path, default=None, help="also check what this site.yaml needs: model, engine, broker, devices")
    doctor.add_argument("--json", action="store_true", help="the report as JSON")
    doctor.set_defaults(func=cmd_doctor)

    bench = sub.add_parser("bench", help="engine speed per backend and batch, stream capacity, yardstick ratios")
    bench.add_argument("--model", type=Path, default=Path("engines/default"), help="model directory (default: engines/default)")
    bench.add_argument(
        "--backends",
        nargs="+",
        default=None,
        metavar="NAME",
        help="engines to time, e.g. onnxruntime, onnxruntime-cpu, torch-cuda, tensorrt (default: every usable one)",
    )
    bench.add_argument("--max-batch", type=int, default=32, help="largest batch timed, and the pipeline's in the capacity search (default 32)")
    bench.add_argument("--seconds", type=float, default=2.0, help="time per measurement: each batch size, each capacity trial (default 2)")
    bench.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    bench.add_argument("--skip-capacity", action="store_true", help="leave out the capacity search")
    bench.add_argument("--skip-yardsticks", action="store_true", help="leave out the yardstick models (they need torch)")
    bench.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="file the capacity streams play and the text bench captions (default: synthetic noise and a tone; captions: config/demo.flac)",
    )
    bench.add_argument("--capacity-engine", default="auto", help="engine of the capacity search, as in site.yaml (default auto)")
    bench.add_argument("--max-streams", type=int, default=256, help="stop the capacity search here (at most 256)")
    bench.add_argument("--backlog", type=int, default=2, help="windows a source may hold before dropping, in the capacity search (default 2)")
    bench.set_defaults(func=cmd_bench)

    config = sub.add_parser("config", help="check a site.yaml or print its JSON schema")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a site.yaml; exit 2 on errors")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the site.yaml JSON schema")
    schema.set_defaults(func=cmd_config_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    return args.func(args)
