"""A class adapter that takes a while to start (``--adapter slow_boot:SlowModel``)."""

import time

import snakepit


class SlowModel(snakepit.Adapter):
    """Sleeps 0.5 s in __init__, like a model loading."""

    def __init__(self) -> None:
        time.sleep(0.5)
        self.ready_at = time.time()

    @snakepit.tool
    def ready(self) -> bool:
        """True once the model has loaded (always, by the time calls arrive)."""
        return True
