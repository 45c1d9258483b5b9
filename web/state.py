"""What the web process keeps: the service layer it calls, the token keys and the metrics registry.
(The last dispatch pass, used sign-in tokens and sessions are shared state in the database: any
process on any host sees them.)"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from core.settings import Settings
from services.facade import Services
from services.metrics import SchedulerCollector
from services.sessions import SessionService


@dataclass
class WebState:
    services: Services
    token_key: str
    session_key: str
    dev: bool = False
    _metrics: CollectorRegistry | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def sessions(self) -> SessionService:
        return self.services.sessions

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """A registry of our own collector only (no process metrics of this one web process)."""
        with self._lock:
            if self._metrics is None:
                registry = CollectorRegistry()
                registry.register(SchedulerCollector(self.services.status))
                self._metrics = registry
            return self._metrics
