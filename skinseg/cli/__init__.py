"""What the command lines share: a quiet TensorFlow start-up, the line that says where a command
runs, and the mapping of failures to exit codes (2: the input or the environment, with one line
naming the file; 3: training diverged; 130: interrupted by Ctrl-C; 143: stopped by SIGTERM).

Each command imports the floors it runs inside its main(), after the arguments are parsed: the
one place where imports are not at the top of a file, because TensorFlow takes seconds to import
and every --help answers without it (tests/test_layering.py checks)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import signal
import sys
import tempfile

from skinseg.core.errors import SkinsegError, is_out_of_memory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's C++ start-up lines (printed before its logging is configured, so no environment
# variable silences them) and CUDA probing on a machine without a GPU.
_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cudart_stub|Could not find cuda drivers|"
    r"cuda_platform\.cc|failed call to cuInit|cpu_feature_guard|This TensorFlow binary is optimized|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate|TF-TRT Warning|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"cuda_executor\.cc|successful NUMA node read|gpu_device\.cc:\d+\] Created device"
)

log = logging.getLogger("skinseg")


def import_tensorflow():
    """Import TensorFlow and Keras and probe the devices with the C++ start-up noise filtered out
    of the console (anything else TensorFlow prints still comes through)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.get_logger().setLevel("WARNING")  # its INFO lines are for TensorFlow's developers
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not _NOISE.search(line):
                    print(line, file=sys.stderr)
    return tf


def where_it_runs() -> str:
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except (ValueError, RuntimeError):
                names.append(gpu.name)
        return f"TensorFlow {tf.__version__} on {len(gpus)} GPU(s): {', '.join(names)}"
    return f"TensorFlow {tf.__version__} on the CPU ({os.cpu_count()} cores; no GPU)"


class _Console(logging.StreamHandler):
    """The console: whatever sys.stderr is when a message is written."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(verbose: bool = True) -> None:
    """The project's messages on the console (warnings only, when not verbose); the run's own
    train.log, attached by training, keeps everything."""
    console = next((h for h in log.handlers if isinstance(h, _Console)), None)
    if console is None:
        console = _Console()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    log.setLevel(logging.INFO)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


class CommandError(SkinsegError):
    """A command-line mistake found before any work: exit 2 with the message."""


def os_error_line(err: OSError) -> str:
    """One line naming the path and what the system said, for a failure of the environment."""
    what = {
        28: "no space left on the device",
        13: "permission denied",
        30: "read-only file system",
        20: "not a directory (a file stands where a folder should be)",
        21: "is a directory",
        2: "no such file or folder",
        17: "already exists",
    }.get(err.errno, err.strerror or str(err))
    path = err.filename or ""
    if err.filename2:
        path = f"{path} -> {err.filename2}"
    return f"{path}: {what}" if path else what


def exit_codes(main):
    """Run a command's main; turn the failures a user can meet into exit codes and one line."""

    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        previous = _terminate_as_interrupt()
        try:
            return main(argv)
        except Terminated:
            print("\nterminated", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except OSError as err:
            print(f"error: {os_error_line(err)}", file=sys.stderr)
            return 2
        except SkinsegError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except Exception as err:
            # What an address-space or container limit raises where no file is to blame (a batch
            # of the network, a table); files too large are reported by name where they are read.
            if not is_out_of_memory(err):
                raise
            first = (getattr(err, "message", None) or str(err) or type(err).__name__).strip().splitlines()
            print(
                f"error: out of memory ({first[0][:200] if first else type(err).__name__}); lower "
                "--batch-size or free memory (predict.py --max-pixels N refuses images too large to "
                "decode)",
                file=sys.stderr,
            )
            return 2
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapped


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop): unwound like Ctrl-C, so that locks are released
    and no file is left half-written, then exit 143."""


def _terminate_as_interrupt():
    """SIGTERM raises Terminated in the main thread (the previous handler is returned, to be put
    back); elsewhere (a command run from a thread) nothing changes."""

    def handler(signum, frame):
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None
