//! `notify::` — messages to people: Slack incoming webhooks and generic webhooks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::http::{send, Request};
use super::{Action, ActionError, Cx, Spec, StatusSpec};
use crate::secret::SecretString;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackInput {
    /// The Slack incoming-webhook URL (a secret: set it in the inventory as { env = "..." }).
    pub webhook: SecretString,
    /// The message text (Slack mrkdwn).
    #[schemars(schema_with = "crate::action::secret_text::text_for_people")]
    pub text: String,
    /// Post to this channel instead of the webhook's default.
    pub channel: Option<String>,
    /// The name the message appears from.
    pub username: Option<String>,
    /// An emoji for the sender, e.g. ":rotating_light:".
    pub icon_emoji: Option<String>,
    /// Slack Block Kit blocks, sent as they are.
    pub blocks: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// The webhook URL (may be a secret).
    pub url: SecretString,
    /// The JSON payload.
    pub json: Value,
    /// Request headers; values may be secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretString>,
    /// Status codes that count as delivered (default: any 2xx).
    pub expect_status: Option<StatusSpec>,
}

/// The receiver's answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// The HTTP status the receiver answered.
    pub status: u16,
    /// Its answer, as text.
    pub body: String,
}

fn excerpt(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut s: String = first.chars().take(72).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

async fn deliver(
    cx: &Cx,
    url: &SecretString,
    headers: &BTreeMap<String, SecretString>,
    payload: &Value,
    expect: &Option<StatusSpec>,
) -> Result<Delivery, ActionError> {
    let resp = send(
        cx,
        Request::post(url, headers, None, Some(payload), cx.timeout),
    )
    .await?;
    if !StatusSpec::accepts(expect, resp.status) {
        let message = format!(
            "{} refused the message: {} {}",
            url.shown(),
            resp.status,
            resp.body.trim()
        );
        return Err(if resp.status >= 500 {
            ActionError::maybe_applied(message)
        } else {
            ActionError::permanent(message)
        });
    }
    Ok(Delivery {
        status: resp.status,
        body: resp.body,
    })
}

action! {
    /// Post a message to Slack through an incoming webhook.
    Slack(SlackInput) -> Delivery = Spec::change("notify", "slack").timeout(15).retries(2)
}

impl Action for Slack {
    fn describe(input: &SlackInput) -> String {
        let to = input
            .channel
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        format!("Slack{to}: \"{}\"", excerpt(&input.text))
    }

    fn predict(_: &SlackInput) -> Delivery {
        Delivery {
            status: 200,
            body: "ok".into(),
        }
    }

    async fn run(input: SlackInput, cx: Cx) -> Result<Delivery, ActionError> {
        let mut payload = json!({ "text": input.text });
        for (key, value) in [
            ("channel", &input.channel),
            ("username", &input.username),
            ("icon_emoji", &input.icon_emoji),
        ] {
            if let Some(v) = value {
                payload[key] = Value::String(v.clone());
            }
        }
        if let Some(blocks) = &input.blocks {
            payload["blocks"] = blocks.clone();
        }
        deliver(&cx, &input.webhook, &BTreeMap::new(), &payload, &None).await
    }
}

action! {
    /// POST a JSON payload to a webhook (PagerDuty, Opsgenie, Teams, a chat bridge).
    Webhook(WebhookInput) -> Delivery = Spec::change("notify", "webhook").timeout(15).retries(2)
}

impl Action for Webhook {
    fn describe(input: &WebhookInput) -> String {
        format!(
            "webhook {}: {}",
            input.url.shown(),
            excerpt(&crate::secret::shown_json(&input.json).to_string())
        )
    }

    fn predict(_: &WebhookInput) -> Delivery {
        Delivery {
            status: 200,
            body: String::new(),
        }
    }

    async fn run(input: WebhookInput, cx: Cx) -> Result<Delivery, ActionError> {
        let json = crate::secret::reveal_json(&input.json).map_err(ActionError::permanent)?;
        deliver(&cx, &input.url, &input.headers, &json, &input.expect_status).await
    }
}
