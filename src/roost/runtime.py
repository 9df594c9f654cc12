"""The running Roost: settings, store and services wired together, started and stopped as one.

This module is the composition root: it is the one place (with :mod:`roost.app`, which mounts
every room's HTTP router, and the CLI) that knows every capability room. It builds each room's
service with what it needs, gives the MQTT gateway the device topics every room declares
(:func:`device_topics`), and imports every room's tables so the one metadata is whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Every room's tables, on the one metadata (the migration check compares it with the database).
import roost.alarms.notify.tables
import roost.alarms.reference.tables
import roost.alarms.rules.tables
import roost.alarms.tables
import roost.audit.tables
import roost.commands.tables
import roost.credentials.certificates.tables
import roost.credentials.keys.tables
import roost.credentials.tokens.tables
import roost.diagnostics.tables
import roost.identity.tables
import roost.inventory.tables
import roost.jobs.tables
import roost.ota.apt.tables
import roost.ota.artifacts.tables
import roost.ota.deployments.tables
import roost.presence.tables
import roost.provisioning.tables
import roost.state.tables
import roost.telemetry.consumers.tables
import roost.telemetry.engine.tables
import roost.telemetry.streams.tables  # noqa: F401
from roost.agents.service import AgentService
from roost.alarms.notify.service import NotificationService
from roost.alarms.reference.service import ReferenceService
from roost.alarms.rules.actions import RuleActions
from roost.alarms.rules.engine import RuleEngine
from roost.alarms.rules.service import RuleService
from roost.alarms.service import AlarmService
from roost.audit.service import AuditService
from roost.bus.base import Bus, open_bus
from roost.commands import mqtt as command_topics
from roost.commands.service import CommandService
from roost.config import Settings
from roost.core.context import ServiceDeps
from roost.core.devicelink import DeviceLink
from roost.core.limits import DeviceLimits
from roost.core.scheduler import Scheduler
from roost.credentials.authenticator import DeviceAuthenticator
from roost.credentials.certificates.service import CertificateService
from roost.credentials.keys.service import KeyService
from roost.credentials.tokens.service import CredentialService
from roost.diagnostics.service import DiagnosticsService
from roost.identity.service import IdentityService
from roost.identity.tokens import new_secret_key
from roost.inventory.devices.service import DeviceService
from roost.inventory.service import InventoryService
from roost.jobs import mqtt as job_topics
from roost.jobs.service import JobService
from roost.mqtt.gateway import Gateway
from roost.mqtt.host import GatewayConfig
from roost.mqtt.topics import DeviceTopics
from roost.ota.apt.service import AptService
from roost.ota.artifacts.service import ArtifactService
from roost.ota.deployments.service import DeploymentService
from roost.presence.service import PresenceService
from roost.provisioning.service import ProvisioningService
from roost.state import mqtt as state_topics
from roost.state.service import StateService
from roost.store import migrate
from roost.store.database import Database, open_database
from roost.telemetry.consumers.service import ConsumerService, looks_like_consumer_key
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.ingest import mqtt as ingest_topics
from roost.telemetry.ingest.service import IngestService
from roost.telemetry.live.service import LiveHub
from roost.telemetry.pipeline import TelemetryPipeline
from roost.telemetry.queries.service import TelemetryService
from roost.telemetry.streams.service import StreamService

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"


def device_topics() -> DeviceTopics:
    """The device ACL: the uplink topics and downlink subtrees every room declares."""
    return DeviceTopics(
        publish=(
            *ingest_topics.TOPICS,
            *state_topics.TOPICS,
            *command_topics.TOPICS,
            *job_topics.TOPICS,
        ),
        subscribe=(
            *ingest_topics.DOWNLINKS,
            state_topics.DOWNLINK,
            command_topics.DOWNLINK,
            job_topics.DOWNLINK,
        ),
    )


def utcnow() -> datetime:
    """The current time in UTC (the default clock of every service)."""
    return datetime.now(UTC)


def load_secret_key(settings: Settings) -> str:
    """The token signing key: ROOST_SECRET_KEY, or a key file in the data dir made on first use.

    It is kept out of the database on purpose: a leaked database dump then cannot mint tokens.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_FILE
    if path.is_file():
        return path.read_text().strip()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see store.files
    key = new_secret_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


@dataclass
class Roost:
    """Everything a Roost process serves with, built from settings."""

    settings: Settings
    db: Database
    identity: IdentityService
    inventory: InventoryService
    devices: DeviceService
    audit: AuditService
    bus: Bus
    credentials: CredentialService
    device_auth: DeviceAuthenticator
    pipeline: TelemetryPipeline
    link: DeviceLink
    scheduler: Scheduler
    presence: PresenceService
    state: StateService
    commands: CommandService
    jobs: JobService
    certificates: CertificateService
    keys: KeyService
    provisioning: ProvisioningService
    consumers: ConsumerService
    limits: DeviceLimits
    reference: ReferenceService
    notifications: NotificationService
    alarms: AlarmService
    rules: RuleService
    rule_engine: RuleEngine
    rule_actions: RuleActions
    artifacts: ArtifactService
    deployments: DeploymentService
    apt: AptService
    diagnostics: DiagnosticsService
    agents: AgentService
    clock: Callable[[], datetime] = utcnow
    generated_admin_password: str | None = field(default=None)
    # The MQTT device gateway (TCP and WebSocket doors share it), made on first use.
    mqtt_gateway: Gateway | None = field(default=None)
    _serving: bool = field(default=False)

    def gateway(self) -> Gateway:
        """The MQTT device gateway, made on first use (the TCP listener and ``/mqtt`` share it)."""
        if self.mqtt_gateway is None:
            config = GatewayConfig.from_settings(self.settings)
            gateway = Gateway(self.device_auth, self.ingest, config, topics=device_topics())
            gateway.limits = self.limits
            self.link.attach(gateway)
            self.mqtt_gateway = gateway
        return self.mqtt_gateway

    @property
    def ingest(self) -> IngestService:
        """Telemetry and event ingest (every device door calls it)."""
        return self.pipeline.ingest

    @property
    def telemetry(self) -> TelemetryService:
        """Reading telemetry and events back."""
        return self.pipeline.telemetry

    @property
    def streams(self) -> StreamService:
        """Consumer groups over the ingest log."""
        return self.pipeline.streams

    @property
    def live(self) -> LiveHub:
        """Live streams of committed telemetry."""
        return self.pipeline.live

    @property
    def timeseries(self) -> TimeSeriesStore:
        """The time-series store."""
        return self.pipeline.store

    @classmethod
    def build(
        cls, settings: Settings, clock: Callable[[], datetime] = utcnow, *, bus: Bus | None = None
    ) -> Roost:
        """Open the store and create the services (nothing is started yet).

        ``bus`` replaces the one ``settings.bus_url`` names (tests share one in-process bus
        between two Roosts to play two processes).
        """
        db = open_database(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        secret = load_secret_key(settings)
        bus = bus if bus is not None else open_bus(settings.bus_url, prefix=settings.bus_prefix)
        device_auth = DeviceAuthenticator(db, bus, secret, clock)
        devices = DeviceService(db, clock)
        devices.deletion_listeners.append(device_auth.device_deleted)
        inventory = InventoryService(db, clock)
        audit = AuditService(db, clock)
        link = DeviceLink(bus)
        scheduler = Scheduler(wall_clock=lambda: clock().timestamp())
        credentials = CredentialService(db, secret, clock, device_auth)
        deps = ServiceDeps(settings, db, bus, link, scheduler, clock, secret)
        pipeline = TelemetryPipeline(settings, db, bus, devices, inventory)
        presence = PresenceService(deps, devices)
        pipeline.ingest.activity = presence.activity
        pipeline.ingest.refused = ingest_topics.IngestOverMQTT(link).refused
        identity = IdentityService(db, settings, secret, clock)
        consumers = ConsumerService(deps)
        identity.accept_consumer_keys(looks_like_consumer_key, consumers.authenticate)
        commands = CommandService(deps)
        state = StateService(deps)
        reference = ReferenceService(deps)
        notifications = NotificationService(deps)
        alarms = AlarmService(deps)

        async def log_end() -> int:
            return (await pipeline.store.log_bounds())[1] - 1

        rules = RuleService(deps, reference=reference, notifications=notifications, log_end=log_end)
        rule_engine = RuleEngine(
            deps,
            store=pipeline.store,
            alarms=alarms,
            notifications=notifications,
            reference=reference,
            commands=commands,
        )
        rule_actions = RuleActions(deps, pipeline.ingest, state)
        rule_engine.actions_hook = rule_actions.wake
        rules.on_change.append(rule_engine.rules_changed)
        artifacts = ArtifactService(deps)
        jobs = JobService(deps)
        diagnostics = DiagnosticsService(deps)
        devices.deletion_listeners.append(diagnostics.device_deleted)
        return cls(
            settings=settings,
            db=db,
            identity=identity,
            inventory=inventory,
            devices=devices,
            audit=audit,
            bus=bus,
            credentials=credentials,
            device_auth=device_auth,
            clock=clock,
            pipeline=pipeline,
            link=link,
            scheduler=scheduler,
            presence=presence,
            state=state,
            commands=commands,
            jobs=jobs,
            certificates=CertificateService(deps, device_auth),
            keys=KeyService(deps, device_auth),
            provisioning=ProvisioningService(deps, devices, credentials),
            consumers=consumers,
            limits=DeviceLimits(settings),
            reference=reference,
            notifications=notifications,
            alarms=alarms,
            rules=rules,
            rule_engine=rule_engine,
            rule_actions=rule_actions,
            artifacts=artifacts,
            deployments=DeploymentService(deps, jobs=jobs, artifacts=artifacts),
            apt=AptService(deps, artifacts=artifacts),
            diagnostics=diagnostics,
            agents=AgentService(deps),
        )

    @property
    def device_services(self) -> tuple[Any, ...]:
        """The services started and stopped with the server (each has ``start``/``close``)."""
        return (
            self.limits,
            self.certificates,
            self.keys,
            self.consumers,
            self.presence,
            self.state,
            self.commands,
            self.jobs,
            self.reference,
            self.notifications,
            self.alarms,
            self.rule_actions,
            self.rule_engine,
            self.artifacts,
            self.deployments,
            self.apt,
            self.diagnostics,
        )

    async def start(self, *, serve: bool = True) -> None:
        """Upgrade the schema, make sure the default tenant and superuser exist, connect.

        With ``serve`` (the server) the telemetry writer, live streams and background upkeep
        start too; commands of the CLI need only the stores and the bus.
        """
        before, after = await migrate.upgrade(self.db)
        if before != after:
            log.info("database schema upgraded from %s to %s", before or "empty", after)
        self.generated_admin_password = await self.identity.bootstrap(
            self.settings.admin_password or None
        )
        await self.bus.start()
        await self.device_auth.start()
        await self.pipeline.open()
        if serve:
            await self.pipeline.serve()
            await self.link.start()
            for service in self.device_services:
                await service.start()
            await self.scheduler.start()
            self._serving = True

    async def close(self) -> None:
        """Commit what is pending and release connections."""
        if self._serving:
            self._serving = False
            await self.scheduler.close()
            for service in reversed(self.device_services):
                await service.close()
            await self.link.close()
        await self.pipeline.close()
        await self.device_auth.close()
        await self.bus.close()
        await self.db.dispose()
