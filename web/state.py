"""What the web process keeps beside the database: the service it calls, the token keys, the used
sign-in token ids and the metrics registry. (The last dispatch pass is shared state, read from the
database: any dispatcher on any host records it.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from core.settings import Settings
from services.metrics import SchedulerCollector
from services.scheduler import SchedulerService
from web.auth import UsedTokenIds


@dataclass
class WebState:
    service: SchedulerService
    token_key: str
    session_key: str
    dev: bool = False
    used_token_ids: UsedTokenIds = field(default_factory=UsedTokenIds)
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
                registry.register(SchedulerCollector(service.engine, service.clock, redis=redis, queue_name=self.settings.QUEUE_NAME))
                self._metrics = registry
            return self._metrics
