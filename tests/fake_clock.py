"""A clock for timer and benchmark tests: seconds that move only when a test (or a stage it builds) says so, so the
true duration of everything timed is known exactly, however busy the machine is."""


class FakeClock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
