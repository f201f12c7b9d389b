"""The ``on_failure_callback`` of every pipeline task: a Slack-compatible webhook message.

Set the Airflow Variable ``visionops_alert_webhook_url`` to a Slack incoming webhook (or anything
that accepts its JSON: Mattermost, Rocket.Chat, a relay); empty, no message is sent. The callback
runs once a task has failed for good (after its retries), on the Airflow worker in both modes.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from visionops_dags import settings

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SEC = 10.0
#: The longest error text the message carries (the log has the rest).
MAX_ERROR_CHARS = 500


def failure_message(context: Any) -> dict[str, Any]:
    """The message about the failed task of ``context``: plain ``text`` (what every
    Slack-compatible receiver shows) and the same facts as Block Kit ``blocks``."""
    ti = context["ti"]
    error = str(context.get("exception") or "unknown error")[:MAX_ERROR_CHARS]
    facts = {
        "DAG": ti.dag_id,
        "Task": ti.task_id,
        "Run": ti.run_id,
        "Try": str(ti.try_number),
    }
    log_url = ti.log_url
    headline = f"visionops pipeline failed: task {ti.task_id} of DAG {ti.dag_id}"
    text = "\n".join(
        [headline, *(f"{key}: {value}" for key, value in facts.items()), f"Log: {log_url}"]
    )
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in facts.items()],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{error}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{log_url}|Task log>"}},
    ]
    return {"text": text, "blocks": blocks}


def notify_failure(context: Any) -> None:
    """Post ``failure_message(context)`` to the webhook; a failing webhook is logged, never
    raised, so that it cannot hide the task's own error."""
    from airflow.sdk import Variable

    url = str(Variable.get(settings.ALERT_WEBHOOK_URL.key, default="")).strip()
    if not url:
        return
    body = json.dumps(failure_message(context)).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SEC) as response:
            response.read()
    except OSError as error:  # URLError, HTTPError, timeouts
        logger.warning("the failure alert did not reach the webhook: %s", error)
