"""User-facing errors: one line that names the cause and the fix; entry scripts (synth.cli) exit non-zero on them."""


class SynthError(Exception):
    """A problem with the user's input (config, data, checkpoint); the message says what to do."""


class TrainingInterrupted(SynthError):
    """Training stopped on a signal (Ctrl-C, SIGTERM, a cluster's preemption warning) after saving a checkpoint at
    the step it reached; the message says how to resume. Exits 128 + the signal number, as shells expect."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
