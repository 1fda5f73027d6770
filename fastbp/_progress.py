"""What a fit does around its batches: progress display, Ctrl-C, releasing callbacks' files."""

import io
import os
import signal
import sys
import threading
import warnings


def isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class closing_on_error:
    """If fit raises, let callbacks release what they hold (CSVLogger's file) via ``_abort()``."""

    def __init__(self, callbacks):
        self.callbacks = callbacks

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            for cb in self.callbacks:
                abort = getattr(cb, "_abort", None)
                if abort is not None:
                    abort()
        return False


class _OwnSigint:
    """Within ``with``: SIGINT goes to ``self._handler`` and, after, back to the handler before.
    Only in the main thread (signals go there), and only where that handler is Python's (one
    installed from outside Python reads as None and could not be put back)."""

    _old = None

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None:
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class InterruptFlag(_OwnSigint):
    """Within ``with``: the first Ctrl-C sets ``flag`` (fit stops after the running batches);
    a second one interrupts at once."""

    def __init__(self):
        self.flag = False

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True


class HeldInterrupts(_OwnSigint):
    """Within ``with``: Ctrl-C is held back and delivered when the block ends (to the handler there
    was before, InterruptFlag's included), so that Python code that must not stop halfway (an
    interpreted batch) is as uninterruptible as a compiled call."""

    def __init__(self):
        self._held = 0

    def _handler(self, signum, frame):
        self._held += 1

    def __enter__(self):
        self._held = 0
        return super().__enter__()

    def __exit__(self, *exc):
        restored = self._old is not None
        super().__exit__(*exc)
        for _ in range(self._held if restored else 0):
            signal.raise_signal(signal.SIGINT)
        return False


def columns(stream):
    """The width of the terminal ``stream`` writes to (else $COLUMNS); 0 when unknown."""
    try:
        n = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        n = 0
    if n <= 0:
        try:
            n = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            n = 0
    return max(n, 0)


MIN_COLUMNS = 40   # narrower (or unknown, or 0: ``script -q -c``, some CI logs): one line per epoch
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {rate_fmt} ETA {remaining}{postfix}"


class Progress:
    """verbose=1: a tqdm bar per epoch (samples/s, loss, ETA) on ``file`` (stderr), its summary
    (every history value) on the bar when it fits, else on a line of its own below it (as
    Keras); where the width is unknown or too small for a bar, one line per epoch there
    instead. verbose=2: a line per epoch on stdout. ``width``: the columns (default: measured
    at each epoch's start)."""

    def __init__(self, verbose, n, epochs, file=None, width=None):
        self.verbose, self.n, self.epochs, self.bar = verbose, n, epochs, None
        self.file, self.width, self._tqdm = file, width, None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
            except ImportError:
                warnings.warn("verbose=1 needs tqdm (pip install tqdm); printing one line per epoch instead",
                              UserWarning, stacklevel=3)
                self.verbose = 2

    def _file(self):
        return sys.stderr if self.file is None else self.file

    def _line(self, epoch, seconds, text):
        return f"epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {self.n / seconds:,.0f} samples/s - {text}"

    def start(self, epoch):
        if self._tqdm is None:
            return
        notebook = any(c.__module__ == "tqdm.notebook" for c in self._tqdm.__mro__)   # a widget: no columns
        ncols = None if notebook else (self.width if self.width is not None else columns(self._file()))
        if ncols is not None and ncols < MIN_COLUMNS:
            return   # no bar: end() prints the epoch's line
        self.bar = self._tqdm(total=self.n, desc=f"epoch {epoch + 1}/{self.epochs}", unit=" samples",
                              unit_scale=True, leave=True, file=self._file(), ncols=ncols,
                              bar_format=BAR_FORMAT, mininterval=0.1)

    def update(self, samples, loss):
        if self.bar is not None:
            self.bar.update(samples)
            self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)

    def end(self, epoch, logs, seconds):
        text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        if self.bar is not None:
            bar = self.bar
            full = bar.format_meter(**{**bar.format_dict, "ncols": None, "postfix": text})
            fits = bar.ncols is None or len(full) <= bar.ncols   # with a bar of at least 10 columns
            bar.set_postfix_str(text if fits else f"loss {logs.get('loss', float('nan')):.4g}", refresh=True)
            self.close()
            if not fits:
                print(self._line(epoch, seconds, text), file=self._file(), flush=True)
        elif self.verbose == 2:
            print(self._line(epoch, seconds, text), flush=True)
        elif self._tqdm is not None:   # verbose=1 without the width for a bar
            print(self._line(epoch, seconds, text), file=self._file(), flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
