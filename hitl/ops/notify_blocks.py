"""The project's Prefect notification blocks, which the Prefect server loads to deliver an automation's
notification (entry point `prefect.collections` in pyproject.toml: the server imports this module at start).

- `HitlWebhook`: Prefect's `CustomWebhookNotificationBlock` (Slack and Teams incoming webhooks take its
  `{"text": ...}` body) whose whole URL is a secret (`{{url}}`, filled from the block's secret values: a Slack or
  Teams webhook URL is its own credential). Unlike its parent it reports a failed delivery as Prefect's
  `NotificationError` with a reason that names no URL: the server then records the automation's action as failed
  (the channel alert reacts to that) instead of logging the HTTP error, URL and all, and retrying it three times.
- `HitlEmail`: email over SMTP (core Prefect has no SMTP notification block); the password is a secret field.

Secrets stay secret: Prefect shows secret fields as `********` in its UI and API, and no error here quotes them.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Literal

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.abstract import NotificationBlock, NotificationError
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from pydantic import Field, SecretStr

WEBHOOK_SLUG, EMAIL_SLUG = "hitl-webhook", "hitl-email"


def _failed(reason: str) -> NotificationError:
    return NotificationError(log=reason)


class HitlWebhook(CustomWebhookNotificationBlock):
    """A webhook (Slack, Teams or any JSON endpoint) whose URL is a secret value; failures name no URL."""

    _block_type_name = "hitl Webhook"
    _block_type_slug = WEBHOOK_SLUG

    async def anotify(self, body: str, subject: str | None = None) -> None:
        import httpx

        try:
            await super().anotify(body, subject)
        except httpx.HTTPStatusError as e:
            raise _failed(f"the webhook {self.name!r} answered HTTP {e.response.status_code}") from None
        except httpx.HTTPError as e:
            raise _failed(f"the webhook {self.name!r} could not be reached ({type(e).__name__})") from None

    @async_dispatch(anotify)  # the server awaits notify() in its event loop: it must dispatch to anotify there
    def notify(self, body: str, subject: str | None = None) -> None:  # type: ignore[override]
        import httpx

        try:
            super().notify(body, subject, _sync=True)  # the parent dispatches sync/async itself
        except httpx.HTTPStatusError as e:
            raise _failed(f"the webhook {self.name!r} answered HTTP {e.response.status_code}") from None
        except httpx.HTTPError as e:
            raise _failed(f"the webhook {self.name!r} could not be reached ({type(e).__name__})") from None


class HitlEmail(NotificationBlock):
    """Email through an SMTP server (STARTTLS, SSL or plain on a trusted relay)."""

    _block_type_name = "hitl Email"
    _block_type_slug = EMAIL_SLUG

    smtp_host: str
    smtp_port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    timeout: float = 20.0

    def _send(self, body: str, subject: str | None) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, ", ".join(self.to), subject or "hitl-loop"
        msg.set_content(body)
        context = ssl.create_default_context()
        try:
            if self.security == "ssl":
                server = smtplib.SMTP_SSL(self.smtp_host, self.smtp_port, timeout=self.timeout, context=context)
            else:
                server = smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout)
            with server:
                if self.security == "starttls":
                    server.starttls(context=context)
                if self.username and self.password:
                    server.login(self.username, self.password.get_secret_value())
                server.send_message(msg)
        except smtplib.SMTPAuthenticationError:
            raise _failed(f"the SMTP server {self.smtp_host} refused the login of {self.username!r}") from None
        except (smtplib.SMTPException, OSError) as e:
            raise _failed(f"email through {self.smtp_host}:{self.smtp_port} failed ({type(e).__name__})") from None

    async def anotify(self, body: str, subject: str | None = None) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._send, body, subject)

    @async_dispatch(anotify)
    def notify(self, body: str, subject: str | None = None) -> None:  # type: ignore[override]
        self._send(body, subject)
