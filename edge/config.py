"""Station configuration: one YAML file, validated strictly, with errors a technician can act on."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from edge.access.scopes import Scope

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# edge/defaults/ links to config/ and samples/ in the source tree; a wheel holds copies of them.
# Resolved, the embedded default is config/station.yaml in a checkout and the copy in an install.
PACKAGED_DEFAULTS = Path(__file__).resolve().parent / "defaults"
DEFAULT_CONFIG = (PACKAGED_DEFAULTS / "config" / "station.yaml").resolve()
CONFIG_ENV = "EDGE_INSPECT_CONFIG"
MULTIPART_ALLOWANCE = 64 * 1024  # bytes a multipart form may add around its file


class ConfigError(Exception):
    """A station file that cannot be used; the message names the file, the key and what is allowed."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs, audit records and dumps."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StationInfo(_Section):
    id: str = Field("station-01", title="Station id", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                    description="Written into every verdict for traceability.")
    name: str = Field("", title="Display name", description="Shown on the station page.")


class StorageSettings(_Section):
    data_dir: Path = Field(Path("../data"), title="Data folder",
                           description="Database, images and trained models. Relative to the config file.")
    database: str = Field("verdicts.db", title="SQLite file name", description="Inside the data folder.")
    save_images: Literal["none", "ng", "all"] = Field(
        "ng", title="Image archive",
        description="Which judged images are kept on disk: none, NG (and INVALID) only, or all.")
    commit_interval_ms: float = Field(
        0.0, ge=0, le=1000, title="Extra commit window",
        description="Extra wait for more records before a commit. 0: commit at once; records that arrive "
                    "during a commit share the next one.")
    sync: Literal["full", "normal"] = Field(
        "full", title="Durability",
        description="full: every acknowledged record survives power loss (an fsync per commit). normal: it "
                    "survives a killed service but the last commits may be lost on power loss; faster on slow disks.")
    max_commit_batch: int = Field(1000, ge=1, le=100_000, title="Records per commit at most")
    min_free_mb: float = Field(1000.0, ge=0, title="Free-space floor, MB",
                               description="Below it the oldest images are deleted and new ones not kept.")
    keep_images_days: int = Field(90, ge=1, le=3650, title="Days to keep images")
    image_budget_mb: float = Field(
        10_240.0, ge=0, title="Image disk budget, MB",
        description="Kept images and heat maps use at most this much; beyond it the oldest are deleted. 0: no "
                    "budget (only the free-space floor and the age limit apply).")
    ok_sample_rate: float = Field(
        0.0, ge=0, le=1, title="Share of OK images kept",
        description="With save_images: ng, this share of OK parts' images is kept too (picked at random).")
    recent_ok_images_mb: float = Field(
        256.0, ge=0, le=65_536, title="Memory for recent OK images, MB",
        description="With save_images: ng, the latest OK images (not picked by ok_sample_rate) are held in "
                    "memory, never written, up to this much (the oldest dropped): an operator's override or "
                    "confirmation of one still held writes it to disk; the station page shows them. Lost on a "
                    "restart. 0: OK images not held.")
    archive_after_days: float = Field(
        90.0, ge=0, title="Archive verdict rows after, days",
        description="Verdicts older than this move from the database to compressed files under <data>/archive "
                    "(only once delivered upstream when the QMS link is configured). 0: never.")
    archive_file_records: int = Field(100_000, ge=100, le=10_000_000, title="Verdicts per archive file at most")
    backup_interval_hours: float = Field(
        24.0, ge=0, title="Backup every, hours",
        description="An online backup of the database (SQLite's backup API, checked) this often. 0: none.")
    backup_dir: Path | None = Field(
        None, title="Backup folder", description="Where scheduled backups go (default <data>/backups); better on "
                                                 "another disk. Relative to the config file.")
    backup_keep: int = Field(7, ge=1, le=1000, title="Backups kept", description="The oldest beyond are deleted.")
    housekeeping_interval_s: float = Field(60.0, gt=0, le=3600, title="Housekeeping every, seconds",
                                           description="How often retention, archiving and backups are checked.")


class ModelSettings(_Section):
    threads: int = Field(2, ge=1, le=64, title="onnxruntime threads per model")
    vision: str = Field("tile-anomaly", title="Default vision model",
                        description="Model name used by the API and sources that name none.")
    acoustic: str | None = Field(None, title="Default acoustic model",
                                 description="Model name for the microphone and the acoustic API; none: no sound.")
    thresholds: dict[str, float] = Field(default_factory=dict, title="Threshold overrides",
                                         description="Model name -> decision threshold replacing the manifest's.")


class TrainingSettings(_Section):
    """How retraining shares the station's CPU with inspection (see edge.training.lower_priority)."""

    priority: Literal["idle", "low"] = Field(
        "idle", title="Training priority",
        description="idle: niced and SCHED_IDLE, training runs only on CPU time nothing else wants, so verdict "
                    "latency does not move, but any busy process on the station slows training down (many times "
                    "over when the CPU is saturated). low: niced only, training keeps a small share of the CPU "
                    "and inspection slows a little while it runs.")
    niceness: int = Field(10, ge=1, le=19, title="Nice increment of the training process")


class WorkbenchSettings(_Section):
    """The maintenance workbench's sampler and retraining (edge.workbench)."""

    sample_band: float = Field(
        0.15, ge=0, le=1, title="Sampler band",
        description="Parts whose score lies within this fraction of the threshold (either side) are kept as "
                    "samples with their image; 0 turns the sampler off.")
    samples_per_hour: int = Field(60, ge=0, le=3600, title="Sampler rate limit",
                                  description="At most this many near-threshold parts are kept per hour.")
    held_out_fraction: float = Field(
        0.25, gt=0, lt=1, title="Held-back share",
        description="Share of the labelled samples kept out of retraining, to compare the models on.")


class ReplaySource(_Section):
    """Replays image files from a folder, in name order, as if a camera delivered them."""

    type: Literal["replay"]
    name: str = Field("replay", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    folder: Path = Field(description="Folder of images (relative to the config file).")
    interval_s: float = Field(1.0, gt=0, le=3600, description="Seconds between frames.")
    loop: bool = Field(True, description="Start again after the last file.")
    model: str | None = Field(None, description="Model name; default: models.vision.")


SourceSettings = Annotated[Union[ReplaySource], Field(discriminator="type")]  # noqa: UP007


class QualitySettings(_Section):
    """Frame quality gate before any model: failing frames get an INVALID verdict with the reason."""

    enabled: bool = True
    min_mean: float = Field(10.0, ge=0, le=255, description="Mean grey below this: under-exposed.")
    max_mean: float = Field(245.0, ge=0, le=255, description="Mean grey above this: over-exposed.")
    max_saturated_fraction: float = Field(0.4, ge=0, le=1, description="Share of pixels at full scale.")
    min_contrast: float = Field(2.0, ge=0, description="Grey-level standard deviation below this: blank frame.")
    min_sharpness: float = Field(10.0, ge=0, description="Variance of the Laplacian below this: blurred (0: off).")


class RoiSettings(_Section):
    x: int = Field(0, ge=0)
    y: int = Field(0, ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CameraRecipeSettings(_Section):
    exposure_us: float | None = Field(None, gt=0, description="Exposure time in microseconds.")
    gain_db: float | None = Field(None, ge=0)
    pixel_format: Literal["Mono8", "BGR8Packed", "RGB8Packed", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8",
                          "Mono12", "Mono16"] | None = None
    roi: RoiSettings | None = None


class RecipeAcoustic(_Section):
    """Listen to each part of this recipe: record from the trigger on, judge, join the camera's verdict."""

    model: str | None = Field(None, description="Acoustic model; default: models.acoustic.")
    record_s: float | None = Field(None, gt=0, le=120, description="Seconds recorded; default: the model's window.")


class Recipe(_Section):
    """A product: camera settings, model, threshold and deadline. Selected by number from the PLC,
    the page or the API; a change applies from the next part on."""

    number: int = Field(ge=1, le=65535, description="Number the PLC selects it by.")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    model: str | None = Field(None, description="Vision model; default: models.vision.")
    threshold: float | None = Field(None, description="Overrides the model's threshold.")
    deadline_ms: float = Field(150.0, gt=0, le=60_000, description="Trigger to result; later -> fail-safe.")
    camera: CameraRecipeSettings = Field(default_factory=lambda: CameraRecipeSettings())
    quality: QualitySettings | None = Field(None, description="Overrides the station's quality gate.")
    acoustic: RecipeAcoustic | None = Field(None, description="Also judge each part by its sound.")
    decision_rule: Literal["worst", "vision-decides"] = Field(
        "worst", description="worst: NG if any modality is NG, else INVALID if any is INVALID, else OK. "
                             "vision-decides: the sound verdict is stored but does not decide (shadow mode).")


class CameraConfig(_Section):
    type: Literal["pylon", "opencv", "folder"]
    name: str = Field("cam1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    serial: str | None = Field(None, description="pylon: camera serial; default: the first camera found.")
    uri: str | None = Field(None, description="opencv: device index, RTSP/HTTP URL or video file.")
    folder: Path | None = Field(None, description="folder: images to return; pylon emulator: images to feed it.")
    trigger: Literal["software", "hardware"] = Field(
        "software", description="software: the appliance triggers the camera on each PLC trigger; hardware: "
                                "the sensor triggers the camera's input line directly.")
    trigger_line: str = Field("Line1", description="pylon hardware trigger input.")
    grab_timeout_ms: float = Field(1000.0, gt=0, le=60_000)
    emulator: bool = Field(
        False, description="pylon: use pypylon's camera emulator fed with 'folder', never a real camera (demos, "
                           "tests); without pypylon the folder is replayed as the camera. A real station leaves "
                           "this off: its missing camera is then a critical alarm.")

    @model_validator(mode="after")
    def _emulator_is_pylon(self) -> CameraConfig:
        if self.emulator and self.type != "pylon":
            raise ValueError("emulator: true is for type pylon (pypylon's camera emulator)")
        return self


class BridgeSettings(_Section):
    type: Literal["modbus-server", "modbus-client", "serial", "none"] = "modbus-server"
    host: str = Field("127.0.0.1", description="modbus-server: listen address; modbus-client: the PLC.")
    port: int = Field(5020, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=247)
    poll_interval_ms: float = Field(5.0, gt=0, le=10_000, description="modbus-client polling period.")
    serial_port: str | None = Field(None, description="serial: device or pyserial URL (e.g. /dev/ttyUSB0).")
    baudrate: int = Field(115200, gt=0)


class LineSettings(_Section):
    """Triggered inspection on a line: PLC trigger -> capture -> judge -> store -> result to the gate."""

    camera: CameraConfig
    bridge: BridgeSettings = Field(default_factory=lambda: BridgeSettings())
    default_recipe: int = Field(1, ge=1, le=65535)
    queue_size: int = Field(8, ge=1, le=1000, description="Parts waiting for capture or judging at most.")
    deadline_margin_ms: float = Field(
        15.0, ge=0, le=1000, description="The fail-safe goes out this much before the recipe's deadline, for the "
                                         "time the link and the PLC's scan take.")
    failsafe_decision: Literal["NG", "OK"] = Field(
        "NG", description="Sent when a part cannot be judged in time or at all: NG rejects the part.")


class ContinuousListening(_Section):
    k: int = Field(3, ge=1, description="Alarm when k of the last n windows are NG.")
    n: int = Field(5, ge=1)
    hop_s: float | None = Field(None, gt=0, description="Seconds between window starts; default: the window.")


class MicrophoneSettings(_Section):
    """A microphone (sounddevice) or WAV files replayed through the same interface."""

    type: Literal["sounddevice", "wav"]
    name: str = Field("mic1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    device: str | None = Field(None, description="sounddevice: device index or (part of) its name.")
    sample_rate: int = Field(16000, ge=8000, le=192000)
    channels: int = Field(1, ge=1, le=32)
    buffer_s: float = Field(60.0, gt=0, le=600, description="Ring buffer length.")
    folder: Path | None = Field(None, description="wav: folder of WAV files, replayed in name order.")
    mode: Literal["per-part", "continuous"] = Field(
        "per-part", description="per-part: record when the line triggers a part whose recipe listens. "
                                "continuous: judge rolling windows of a running machine.")
    model: str | None = Field(None, description="Continuous mode's model; default: models.acoustic.")
    continuous: ContinuousListening = Field(default_factory=lambda: ContinuousListening())


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", title="Listen address")
    port: int = Field(8080, ge=1, le=65535, title="Listen port")
    max_upload_mb: float = Field(25.0, gt=0, le=1024, title="Largest accepted upload, in MB")
    max_image_megapixels: float = Field(64.0, gt=0, le=1000, title="Largest accepted image, in megapixels")
    tls_certificate: Path | None = Field(None, title="TLS certificate (PEM)",
                                         description="With tls_key, serve HTTPS; relative to the config file.")
    tls_key: Path | None = Field(None, title="TLS private key (PEM)", description="Unencrypted PEM key file.")
    max_connections: int = Field(256, ge=1, le=100_000, title="Open connections at most",
                                 description="Further connections get 503 and are closed at once.")
    header_timeout_s: float = Field(10.0, gt=0, le=600, title="Request head deadline, seconds",
                                    description="A request's line and headers must arrive within this time "
                                                "(a slow or stalled client is answered 408 and disconnected).")
    body_timeout_s: float = Field(60.0, gt=0, le=3600, title="Request body deadline, seconds",
                                  description="A request's whole body must arrive within this time.")
    keep_alive_s: float = Field(5.0, gt=0, le=600, title="Idle keep-alive, seconds")
    max_header_kb: int = Field(64, ge=4, le=1024, title="Largest request head, KiB")
    rate_limit_per_s: float = Field(
        200.0, ge=0, le=100_000, title="Requests per second per client address (0: no limit)",
        description="Sustained rate; above it a client gets 429 with Retry-After. An AOI station at 25 parts/s "
                    "with several requests per part stays well below the default.")
    rate_limit_burst: int = Field(400, ge=1, le=1_000_000, title="Burst allowance per client, requests")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("tls_certificate and tls_key go together: set both for HTTPS, or neither")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body read at all: an upload plus room for its multipart envelope."""
        return self.max_upload_bytes + MULTIPART_ALLOWANCE


class LoggingSettings(_Section):
    """How the service logs (``edge-inspect run``); ``--log-format`` on the command line wins."""

    format: Literal["text", "json"] = Field("text", title="Log format",
                                            description="text: readable lines; json: one JSON object per line "
                                                        "(time, level, logger, message and extra fields).")
    requests: bool = Field(True, title="Request log",
                           description="One line per HTTP request: method, path, status, duration, client, "
                                       "identity (never credentials).")


class PasswordHashSettings(_Section):
    """argon2id parameters for user PINs and passwords; changing them rehashes each PIN at its next login."""

    time_cost: int = Field(2, ge=1, le=20, title="argon2 passes",
                           description="Iterations over memory; with the defaults a verify takes about 60 ms on "
                                       "a 2-core station PC.")
    memory_kib: int = Field(65536, ge=1024, le=1_048_576, title="argon2 memory, KiB",
                            description="Memory per hash; lower only for tests.")
    parallelism: int = Field(2, ge=1, le=16, title="argon2 lanes")


class AccessSettings(_Section):
    """Who may do what over the API (edge.access): anonymous scopes, sessions, login throttling, hosts."""

    anonymous_scopes: list[Scope] | None = Field(
        None, title="Scopes without a credential",
        description="What requests without a token or session may do. Default: qms:read and aoi:verdict when the "
                    "API listens on loopback only, none otherwise.")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, title="Session lifetime, hours",
                                 description="A browser session ends this long after its login (absolute).")
    allowed_hosts: list[str] = Field(
        default_factory=list, title="Extra Host names",
        description="Host header names accepted besides IP literals, localhost and this machine's hostname "
                    "(DNS-rebinding protection), e.g. the station's DNS name.")
    login_max_failures: int = Field(5, ge=1, le=100, title="Failed logins before a lockout",
                                    description="Per client address and per user name.")
    login_lockout_s: float = Field(1.0, gt=0, le=3600, title="First lockout, seconds",
                                   description="Doubles with every further failure.")
    login_max_lockout_s: float = Field(900.0, gt=0, le=86400, title="Longest lockout, seconds")
    password_hash: PasswordHashSettings = Field(default_factory=lambda: PasswordHashSettings())


class ShiftSettings(_Section):
    """One shift of the plant's day: it runs from its start until the next shift's start."""

    name: str = Field(title="Shift name", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
                      description="Shown in the per-shift figures, e.g. early, late, night.")
    start: str = Field(title="Start time", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                       description="Local time of day (HH:MM, 24 h) at which the shift begins.")


class SpcSettings(_Section):
    """Statistical process control on anomaly scores and the NG rate (edge.quality.spc)."""

    baseline_points: int = Field(100, ge=10, le=100_000, title="Baseline verdicts",
                                 description="The control limits of a score chart come from its first this many "
                                             "scored verdicts (individuals and moving-range chart).")
    baseline_scope: Literal["batch", "recipe", "model"] = Field(
        "batch", title="Baseline scope",
        description="batch: each batch's first verdicts of a model version set its limits. recipe: the first "
                    "verdicts of that model version under the same line recipe set them, for every later batch. "
                    "model: the first verdicts a model version ever judged on this station set them.")
    subgroup_parts: int = Field(50, ge=5, le=100_000, title="Parts per p-chart subgroup",
                                description="The NG-rate chart takes consecutive parts of a batch in groups of "
                                            "this many (applies to parts judged after a change).")
    baseline_subgroups: int = Field(20, ge=2, le=10_000, title="Baseline subgroups",
                                    description="The p-chart's centre line is the NG rate of the first this many "
                                                "subgroups.")
    alarm: bool = Field(True, title="Alarm on drift",
                        description="Raise an 'spc_drift' alarm when a score chart breaks a Western Electric rule "
                                    "(2-4, or rule 1 on a part still judged OK) or the NG rate leaves its limits.")
    check_interval_s: float = Field(2.0, gt=0, le=3600, title="Seconds between drift checks")
    drift_tolerance: float = Field(0.25, gt=0, le=10, title="Score drift tolerance",
                                   description="The model check warns when the median score of the day's good "
                                               "parts differs from the calibration median by more than this share.")


class FiguresSettings(_Section):
    """Batch figures, shifts, SPC and batch reports for the plant's QMS (edge.quality)."""

    timezone: str = Field("UTC", title="Plant time zone",
                          description="IANA zone (e.g. Europe/Berlin) in which shift start times are given.")
    shifts: list[ShiftSettings] = Field(
        default_factory=lambda: [ShiftSettings(name="early", start="06:00"), ShiftSettings(name="late", start="14:00"),
                                 ShiftSettings(name="night", start="22:00")],
        title="Shifts", description="The plant's shifts; a part counts in the shift during which it was first judged.")
    current_hours: int = Field(8, ge=1, le=24 * 31, title="Hours of the current summary",
                               description="With no open batch the station's current summary covers this many hours.")
    spc: SpcSettings = Field(default_factory=lambda: SpcSettings(), title="SPC")
    report_thumbnails: int = Field(24, ge=0, le=500, title="NG thumbnails in a batch report",
                                   description="A batch report shows at most this many NG parts with heat maps.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Berlin") from exc
        return value

    @field_validator("shifts")
    @classmethod
    def _distinct_shifts(cls, shifts: list[ShiftSettings]) -> list[ShiftSettings]:
        if not shifts:
            raise ValueError("at least one shift is needed (one shift starting 00:00 for a plant without shifts)")
        for attribute in ("name", "start"):
            values = [getattr(s, attribute) for s in shifts]
            if len(set(values)) != len(values):
                raise ValueError(f"shift {attribute}s must be unique")
        return shifts


class WebhookSettings(_Section):
    """POST the outbox's messages, in batches, to an HTTP endpoint (beside or instead of MQTT)."""

    url: str = Field(title="Webhook URL", pattern=r"^https?://",
                     description="http(s) URL that receives POSTed JSON batches; any 2xx answer counts as delivered.")
    headers: dict[str, str] = Field(
        default_factory=dict, title="Extra request headers",
        description="E.g. an Authorization header for the receiver. Values are never logged.")
    timeout_s: float = Field(5.0, gt=0, le=120, title="Request timeout, seconds",
                             description="A request not answered in time counts as failed and is retried later.")
    batch_size: int = Field(200, ge=1, le=10_000, title="Messages per request at most")

    @field_serializer("headers")
    def _hide_header_values(self, headers: dict[str, str]) -> dict[str, str]:
        """Dumps (the audited station file, config check) never show the values: they are credentials."""
        return {name: "***" for name in headers}


class UpstreamSettings(_Section):
    """Push every record to the plant (edge.upstream): an outbox written in the same transaction as each
    record, drained to an MQTT broker and/or a webhook with retries; nothing is dropped while they are down."""

    mqtt_url: str | None = Field(
        None, title="MQTT broker URL", pattern=r"^mqtts?://",
        description="mqtt://HOST:PORT (or mqtts:// for TLS; user:password@ before the host when the broker needs "
                    "them; the password is never logged). None: no MQTT.")
    topic_root: str = Field("edge-inspect", title="Topic root", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                            description="First level of every topic.")
    site: str | None = Field(None, title="Site level", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             description="Optional topic level after the root (a plant).")
    line: str | None = Field(None, title="Line level", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             description="Optional topic level after the site: topics become "
                                         "ROOT/SITE/LINE/STATION/KIND. Default: ROOT/STATION/KIND.")
    client_id: str | None = Field(None, title="MQTT client id", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                                  description="Default: edge-inspect-<station id>.")
    keepalive_s: int = Field(30, ge=5, le=3600, title="MQTT keep-alive, seconds")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, title="Connect timeout, seconds",
                                     description="A broker that does not accept the session in time is retried later.")
    ack_timeout_s: float = Field(10.0, gt=0, le=600, title="Acknowledgement timeout, seconds",
                                 description="A QoS 1 publish not acknowledged in time counts as failed; the "
                                             "connection is dropped and the message sent again later.")
    retry_min_s: float = Field(1.0, gt=0, le=600, title="First retry delay, seconds")
    retry_max_s: float = Field(60.0, gt=0, le=3600, title="Longest retry delay, seconds",
                               description="Retry delays double from the first up to this (with jitter).")
    batch_size: int = Field(500, ge=1, le=10_000, title="Messages per delivery round at most")
    max_inflight: int = Field(500, ge=1, le=65_535, title="Unacknowledged MQTT messages at most")
    state_interval_s: float = Field(10.0, gt=0, le=3600, title="State message period, seconds",
                                    description="How often the retained state message (online, counters) is renewed.")
    outbox_alarm_rows: int = Field(
        1_000_000, ge=1, title="Outbox alarm size",
        description="An alarm is raised when more messages than this wait for delivery (the broker or webhook has "
                    "been unreachable a long time). Nothing is dropped: the outbox is the record of what is owed.")
    webhook: WebhookSettings | None = Field(None, title="Webhook", description="Optional HTTP delivery.")

    @field_serializer("mqtt_url")
    def _hide_password(self, url: str | None) -> str | None:
        return None if url is None else redact_url(url)

    @model_validator(mode="after")
    def _retry_order(self) -> UpstreamSettings:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self

    @property
    def enabled(self) -> bool:
        return self.mqtt_url is not None or self.webhook is not None


class StationConfig(_Section):
    station: StationInfo = Field(default_factory=lambda: StationInfo())
    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())
    models: ModelSettings = Field(default_factory=lambda: ModelSettings())
    sources: list[SourceSettings] = Field(default_factory=list)
    quality: QualitySettings = Field(default_factory=lambda: QualitySettings())
    recipes: list[Recipe] = Field(default_factory=list)
    line: LineSettings | None = None
    microphone: MicrophoneSettings | None = None
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    logging: LoggingSettings = Field(default_factory=lambda: LoggingSettings())
    training: TrainingSettings = Field(default_factory=lambda: TrainingSettings())
    workbench: WorkbenchSettings = Field(default_factory=lambda: WorkbenchSettings())
    access: AccessSettings = Field(default_factory=lambda: AccessSettings())
    upstream: UpstreamSettings = Field(default_factory=lambda: UpstreamSettings())
    figures: FiguresSettings = Field(default_factory=lambda: FiguresSettings())

    # Folder the config file was read from; relative paths are resolved against it.
    base_dir: Path = Field(Path("."), exclude=True)
    # The file itself (None when built in code), named in messages that tell what to run with --config.
    source_path: Path | None = Field(None, exclude=True)

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[ReplaySource]) -> list[ReplaySource]:
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return sources

    @model_validator(mode="after")
    def _recipes_fit_the_line(self) -> StationConfig:
        numbers = [r.number for r in self.recipes]
        margin = self.line.deadline_margin_ms if self.line is not None else 0.0
        tight = [f"{r.number} ({r.deadline_ms:g} ms)" for r in self.recipes if r.deadline_ms <= margin]
        if tight:
            raise ValueError(f"recipe deadlines must exceed line.deadline_margin_ms ({margin:g} ms): "
                             f"{', '.join(tight)}")
        if len(set(numbers)) != len(numbers):
            raise ValueError("recipe numbers must be unique")
        listening = [r.number for r in self.recipes if r.acoustic is not None]
        if listening and self.microphone is None:
            raise ValueError(f"recipes {listening} listen to parts but no 'microphone' is configured")
        needs_model = [r.number for r in self.recipes if r.acoustic is not None and not r.acoustic.model]
        if (needs_model or (self.microphone and self.microphone.mode == "continuous" and not self.microphone.model)) \
                and not self.models.acoustic:
            raise ValueError("an acoustic model is needed: set models.acoustic or name one where it is used")
        if self.line is not None and self.line.default_recipe not in numbers:
            raise ValueError(f"line.default_recipe {self.line.default_recipe} is not among the recipes' numbers "
                             f"({', '.join(map(str, numbers)) or 'none defined'})")
        return self

    def recipe(self, number: int) -> Recipe | None:
        return next((r for r in self.recipes if r.number == number), None)

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.storage.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_dir / self.storage.database

    @property
    def archive_dir(self) -> Path:
        """Where verdict rows moved out of the database are kept (edge.store.archiving)."""
        return self.data_dir / "archive"

    @property
    def backup_dir(self) -> Path:
        return self.data_dir / "backups" if self.storage.backup_dir is None else self.resolve(self.storage.backup_dir)


def default_config_path() -> Path:
    """The station file used without --config: $EDGE_INSPECT_CONFIG, else the embedded default."""
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def installed_data_dir() -> Path:
    """Data folder of the embedded default when it runs from an installed package (whose own folder may
    be read-only and is replaced on upgrade): $XDG_DATA_HOME/edge-inspect, by default ~/.local/share/edge-inspect."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "edge-inspect"


def _is_installed_default(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == DEFAULT_CONFIG and resolved.is_relative_to(PACKAGED_DEFAULTS)


def load_config(path: Path | None = None) -> StationConfig:
    """Read and validate a station file; raise ConfigError with an actionable message."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(raw).__name__}")
    for internal in ("base_dir", "source_path"):
        if internal in raw:
            raise ConfigError(f"{path}: key '{internal}' is not allowed")
    if _is_installed_default(path) and isinstance(raw.get("storage"), dict):
        raw["storage"] = {**raw["storage"], "data_dir": str(installed_data_dir())}
    try:
        return StationConfig.model_validate({**raw, "base_dir": path.resolve().parent, "source_path": path.resolve()})
    except ValidationError as exc:
        raise ConfigError(describe_errors(path, exc)) from exc


def describe_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the station config"]
    for error in exc.errors():
        loc = [p for p in error["loc"]]
        key = ".".join(str(p) for p in loc) or "<top level>"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(StationConfig, loc[:-1])
            hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  - {key}: unknown key{hint}")
        else:
            allowed_values = error.get("ctx", {}).get("expected")
            hint = f" (allowed: {allowed_values})" if allowed_values else ""
            lines.append(f"  - {key}: {error['msg']}{hint}; got {error.get('input')!r}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """The field names accepted at ``loc`` inside ``model`` (following nested models and lists)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            # a discriminated union member tag, e.g. sources.0.replay
            current = _union_member(current, str(part))
            continue
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [name for name in current.model_fields if name not in ("base_dir", "source_path")]
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as ``list[X]``, ``X | None`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _union_member(model: Any, tag: str) -> Any:
    del model
    members: tuple[Any, ...] = typing.get_args(typing.get_args(SourceSettings)[0])
    if not members:
        members = (typing.get_args(SourceSettings)[0],)
    for member in members:
        field = member.model_fields.get("type")
        if field is not None and tag in typing.get_args(field.annotation):
            return member
    return None


