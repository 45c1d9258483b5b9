"""What the web process keeps: the services it calls, the token keys and the metrics registry.
(The last dispatch pass, used sign-in tokens and sessions are shared state in the database: any
process on any host sees them.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from core.settings import Settings
from services.metrics import SchedulerCollector
from services.scheduler import SchedulerService
from services.sessions import SessionService


@dataclass
class WebState:
    service: SchedulerService
    sessions: SessionService
    token_key: str
    session_key: str
    dev: bool = False
    _metrics: CollectorRegistry | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """A registry of our own collector only (no process metrics of this one web process)."""
        with self._lock:
            if self._metrics is None:
                service = self.service
                redis = service.wiring.redis if self.settings.queue_mode_available else None
                registry = CollectorRegistry()
                registry.register(SchedulerCollector(
                    service.engine, service.clock, redis=redis, queue_name=self.settings.QUEUE_NAME,
                    capacity_window_minutes=self.settings.CAPACITY_RUN_WINDOW, default_run_seconds=self.settings.CAPACITY_DEFAULT_RUN_SECONDS,
                ))
                self._metrics = registry
            return self._metrics
