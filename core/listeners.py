"""Change callbacks for the data models the viewer draws (annotation store, object sets, tile scores).

Data changes on worker threads (an analysis adding cells) as well as on the GUI thread (a drawing tool), so the
callback list has its own lock, and each callback runs on the thread that made the change: the Qt side hands it
over to the GUI thread itself.
"""

from __future__ import annotations

import threading
from typing import Callable


class Listeners:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable] = []

    def subscribe(self, callback: Callable) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def emit(self, event) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(event)
