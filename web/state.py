"""What the web process keeps beside the database: the wired App, the token key and one
Dispatcher per mode. (The last dispatch pass, used sign-in tokens and sessions are shared state
in the database: any process on any host sees them.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dispatcher.service import Dispatcher, Mode
from monitor_scheduler.app import App
from monitor_scheduler.exceptions import QueueUnavailable
from monitor_scheduler.metrics import SchedulerCollector
from prometheus_client import CollectorRegistry


@dataclass
class WebState:
    app: App
    token_key: str
    session_key: str
    dev: bool = False
    _dispatchers: dict[Mode, Dispatcher] = field(default_factory=dict)
    _metrics: CollectorRegistry | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """A registry of our own collector only (no process metrics of this one web process)."""
        with self._lock:
            if self._metrics is None:
                redis = self.app.redis if self.app.settings.queue_mode_available else None
                registry = CollectorRegistry()
                registry.register(SchedulerCollector(self.app.engine, self.app.clock, redis=redis, queue_name=self.app.settings.QUEUE_NAME))
                self._metrics = registry
            return self._metrics

    def dispatcher(self, mode: Mode) -> Dispatcher:
        # Built once per mode: the sync runner imports MONITOR_TASK, the queue one opens Redis.
        if mode is Mode.QUEUE and not self.app.settings.queue_mode_available:
            raise QueueUnavailable("queue mode needs REDIS_URL")
        with self._lock:
            if mode not in self._dispatchers:
                self._dispatchers[mode] = self.app.dispatcher(mode)
            return self._dispatchers[mode]
