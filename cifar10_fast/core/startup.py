"""How every entry point starts and ends, the same way: its flags answered before the heavy
modules load, a Ctrl-C while they load answered in one line, and at the end no teardown.

    from cifar10_fast.core import startup
    startup.flags_first(__name__, parse_args, stopped_line)   # run as a script: the flags, now

    import torch  # noqa: E402  the heavy modules, after the flags
    ...

    if __name__ == "__main__":
        startup.run(main)

The imports make about half a million objects that live as long as the process: no collection
looks through them while they load (a second of it on 2 cores) nor after (gc.freeze).
"""
import gc
import os
import signal
import sys

from cifar10_fast.core.errors import loading_failure_line, printable
from cifar10_fast.core.internals import exit_without_teardown
from cifar10_fast.core.lifecycle import INTERRUPTED, STOP_SIGNALS


def flags_first(module_name, parse, stopped_line=lambda flags: "interrupted: nothing was written"):
    """Where the entry runs as a script (`module_name` is "__main__"): parse its command line now,
    so that --help and a bad flag answer before torch loads (seconds), and keep the garbage collector
    off while the imports after this call load. Ctrl-C or SIGTERM while they load: the one line
    `stopped_line(flags)`, exit status 130. Imported by a group's worker process (multiprocessing's
    spawn imports the script as "__mp_main__"), it keeps the collector off while the imports load,
    until the worker calls imports_done(); imported otherwise (a test, the bench), it does nothing."""
    if module_name == "__mp_main__":
        gc.disable()
    if module_name != "__main__":
        return
    flags = parse(sys.argv[1:])
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        print(stopped_line(flags), file=sys.stderr)
        sys.exit(INTERRUPTED)

    def failed_to_load(kind, error, traceback):
        if stopped:  # the stop's exit, raised inside a C extension's import, comes out as that import's failure
            os._exit(INTERRUPTED)
        line = None if getattr(flags, "debug", False) else loading_failure_line(error)
        if line is None:
            sys.__excepthook__(kind, error, traceback)
            return
        print(f"error: {printable(line)}", file=sys.stderr, flush=True)
        os._exit(2)  # as any other failure of the machine ends: nothing has begun to clean up

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    for stream in (sys.stdout, sys.stderr):  # a terminal whose locale cannot show a name shows it escaped
        stream.reconfigure(errors="backslashreplace")
    os.environ["MPLBACKEND"] = "Agg"  # the tools draw into files; a notebook's backend may not be installed here
    sys.excepthook = failed_to_load  # until run(): main's own errors are one_line_errors'
    gc.disable()


def run(main):
    """`main()` of an entry point run as a script, once its imports are done: what they made frozen
    (no collection looks through it again), and on success an exit without the interpreter's
    teardown; every file the entry writes is written and closed by then."""
    sys.excepthook = sys.__excepthook__
    imports_done()
    main()
    exit_without_teardown(0)


def imports_done():
    """The collector on again, past the objects the imports made: they live as long as the process."""
    gc.enable()
    gc.freeze()
