"""What a fit does around its batches: progress display, Ctrl-C, releasing callbacks' files."""

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


class InterruptFlag:
    """Within ``with``: the first Ctrl-C sets ``flag`` (fit stops after the running batches);
    a second one interrupts at once. Only in the main thread (signals go there)."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Progress:
    """verbose=1: a tqdm bar per epoch (samples/s, loss, ETA); verbose=2: a line per epoch."""

    def __init__(self, verbose, n, epochs):
        self.verbose, self.n, self.epochs, self.bar = verbose, n, epochs, None
        self._tqdm = None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
            except ImportError:
                warnings.warn("verbose=1 needs tqdm (pip install tqdm); printing one line per epoch instead",
                              UserWarning, stacklevel=3)
                self.verbose = 2

    def start(self, epoch):
        if self._tqdm is not None:
            self.bar = self._tqdm(total=self.n, desc=f"epoch {epoch + 1}/{self.epochs}", unit=" samples",
                                  unit_scale=True, leave=True, file=sys.stderr, dynamic_ncols=True)

    def update(self, samples, loss):
        if self.bar is not None:
            self.bar.update(samples)
            self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)

    def end(self, epoch, logs, seconds):
        text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
            self.close()
        elif self.verbose == 2:
            print(f"epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {self.n / seconds:,.0f} samples/s - {text}",
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
