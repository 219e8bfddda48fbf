"""The platforms dunlink speaks, by the name the vendors file gives them (``platform = "copecart"``)."""

from __future__ import annotations

from platforms.copecart.webhook import CopeCartWebhook
from platforms.digistore24.webhook import Digistore24Webhook
from platforms.port import WebhookPlatform

DEFAULT = "copecart"
PLATFORMS: dict[str, WebhookPlatform] = {"copecart": CopeCartWebhook(), "digistore24": Digistore24Webhook()}


def platform_named(name: str) -> WebhookPlatform:
    """The platform of that name; a vendors file naming another is refused at start-up (config.vendors)."""
    return PLATFORMS[name]
