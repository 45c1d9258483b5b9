"""What the web process keeps beside the database: the wired App, the token key, the used
sign-in token ids and one Dispatcher per mode. (The last dispatch pass is shared state, read
from the database: any dispatcher on any host records it.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dispatcher.service import Dispatcher, Mode
from monitor_scheduler.app import App
from monitor_scheduler.metrics import SchedulerCollector
from web.auth import UsedTokenIds
from prometheus_client import CollectorRegistry


@dataclass
class WebState:
    app: App
    token_key: str
    session_key: str
    dev: bool = False
    used_token_ids: UsedTokenIds = field(default_factory=UsedTokenIds)
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
        # Built once per mode: the sync runner imports MONITOR_TASK, the queue one opens Redis
        # (without REDIS_URL, App.redis raises ConfigurationError: a 503, see web/app.py).
        with self._lock:
            if mode not in self._dispatchers:
                self._dispatchers[mode] = self.app.dispatcher(mode)
            return self._dispatchers[mode]
