//! `dns::` — AWS Route53: records, weighted traffic shifts, change tracking, health checks.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, ECS,
//! instance metadata). `endpoint_url` points the client elsewhere (moto, LocalStack).
//! Every action takes `zone`: a hosted zone id (Z123...) or its name (example.com).

mod changes;
mod records;
mod sync;
mod weights;
pub use changes::*;
pub use records::*;
pub use sync::*;
pub use weights::*;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, ResourceRecordSetFailover, RrType,
};
use aws_sdk_route53::Client;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Cx, Dur, Poll, Spec};

/// Where the Route53 API is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Another endpoint for the Route53 API (moto, LocalStack); default: AWS.
    pub endpoint_url: Option<String>,
    /// The AWS region for signing (default us-east-1; Route53 is global).
    pub region: Option<String>,
}

/// Clients are built once per endpoint: loading the credential chain is not free.
static CLIENTS: super::Clients<Endpoint, Client> = super::Clients::new();

async fn client(endpoint: &Endpoint) -> Client {
    if let Some(c) = CLIENTS.get(endpoint) {
        return c;
    }
    let region = endpoint.region.as_deref().unwrap_or("us-east-1");
    let config = super::aws::config(&endpoint.endpoint_url, region).await;
    CLIENTS.keep(endpoint.clone(), Client::new(&config))
}

fn aws_error<E, R>(
    what: &str,
    endpoint: &Endpoint,
    e: aws_sdk_route53::error::SdkError<E, R>,
) -> ActionError
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    super::aws::error(what, &where_(endpoint), e)
}

fn where_(endpoint: &Endpoint) -> String {
    endpoint
        .endpoint_url
        .clone()
        .unwrap_or_else(|| "Route53".into())
}

/// The client for an endpoint and the id of a zone in it.
async fn zone_client(
    endpoint_url: &Option<String>,
    region: &Option<String>,
    zone: &str,
) -> Result<(Client, Endpoint, String), ActionError> {
    let endpoint = Endpoint {
        endpoint_url: endpoint_url.clone(),
        region: region.clone(),
    };
    let c = client(&endpoint).await;
    let id = zone_id(&c, &endpoint, zone).await?;
    Ok((c, endpoint, id))
}

/// A record's name with its final dot, as Route53 returns names.
fn fqdn(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

/// The zone's id, from an id or a name.
async fn zone_id(c: &Client, endpoint: &Endpoint, zone: &str) -> Result<String, ActionError> {
    let zone = zone.trim_start_matches("/hostedzone/");
    if !zone.contains('.') {
        return Ok(zone.to_string());
    }
    let wanted = fqdn(zone);
    let out = c
        .list_hosted_zones_by_name()
        .dns_name(&wanted)
        .send()
        .await
        .map_err(|e| aws_error(&format!("looking up zone {zone}"), endpoint, e))?;
    out.hosted_zones()
        .iter()
        .find(|z| fqdn(z.name()) == wanted)
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
        .ok_or_else(|| {
            ActionError::permanent(format!(
                "no hosted zone named {wanted} ({})",
                where_(endpoint)
            ))
        })
}

/// Where an alias record points.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The target's hosted zone id (a load balancer's zone, say).
    pub zone_id: String,
    /// The target's DNS name.
    pub dns_name: String,
    /// Answer only while the target is healthy.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// A record set, as the actions read and write it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The name, e.g. "orchestrator.example.com".
    pub name: String,
    /// The type: A, AAAA, CNAME, TXT, ...
    #[serde(rename = "type")]
    pub rtype: String,
    /// Tells weighted (or failover) records of one name apart, e.g. the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    /// The share of answers, 0–255 (weighted routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Time to live in seconds (not for aliases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// The values (addresses, names, texts); empty for an alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// An alias target instead of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<Alias>,
    /// The health check that gates this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    /// "PRIMARY" or "SECONDARY" (failover routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
}

impl Record {
    fn from_aws(r: &ResourceRecordSet) -> Record {
        Record {
            name: r.name().to_string(),
            rtype: r.r#type().as_str().to_string(),
            set_identifier: r.set_identifier().map(str::to_string),
            weight: r.weight(),
            ttl: r.ttl(),
            values: r
                .resource_records()
                .iter()
                .map(|v| v.value().to_string())
                .collect(),
            alias: r.alias_target().map(|a| Alias {
                zone_id: a.hosted_zone_id().to_string(),
                dns_name: a.dns_name().to_string(),
                evaluate_target_health: a.evaluate_target_health(),
            }),
            health_check_id: r.health_check_id().map(str::to_string),
            failover: r.failover().map(|f| f.as_str().to_string()),
        }
    }

    fn to_aws(&self) -> Result<ResourceRecordSet, ActionError> {
        let bad = |e: aws_sdk_route53::error::BuildError| {
            ActionError::permanent(format!("record {}: {e}", self.name))
        };
        let values = self
            .values
            .iter()
            .map(|v| ResourceRecord::builder().value(v).build().map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let alias = match &self.alias {
            Some(a) => Some(
                AliasTarget::builder()
                    .hosted_zone_id(&a.zone_id)
                    .dns_name(&a.dns_name)
                    .evaluate_target_health(a.evaluate_target_health)
                    .build()
                    .map_err(bad)?,
            ),
            None => None,
        };
        ResourceRecordSet::builder()
            .name(fqdn(&self.name))
            .r#type(RrType::from(self.rtype.to_ascii_uppercase().as_str()))
            .set_set_identifier(self.set_identifier.clone())
            .set_weight(self.weight)
            .set_ttl(self.ttl)
            .set_resource_records((!values.is_empty()).then_some(values))
            .set_alias_target(alias)
            .set_health_check_id(self.health_check_id.clone())
            .set_failover(
                self.failover
                    .as_deref()
                    .map(ResourceRecordSetFailover::from),
            )
            .build()
            .map_err(bad)
    }

    /// A change that applies `action` to this record set.
    fn change(&self, action: ChangeAction) -> Result<Change, ActionError> {
        Change::builder()
            .action(action)
            .resource_record_set(self.to_aws()?)
            .build()
            .map_err(|e| ActionError::permanent(format!("record {}: {e}", self.name)))
    }

    fn shown(&self) -> String {
        let target = match &self.alias {
            Some(a) => format!("alias {}", a.dns_name),
            None => self.values.join(","),
        };
        let id = self
            .set_identifier
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        let w = self
            .weight
            .map(|w| format!(" weight {w}"))
            .unwrap_or_default();
        format!(
            "{} {}{id}{w} → {target}",
            self.name.trim_end_matches('.'),
            self.rtype
        )
    }
}

/// Every record of the zone (paging through), optionally only those of one name and type.
async fn list(
    c: &Client,
    endpoint: &Endpoint,
    zone: &str,
    name: Option<&str>,
    rtype: Option<&str>,
) -> Result<Vec<Record>, ActionError> {
    let mut out = Vec::new();
    let mut start: Option<(String, RrType, Option<String>)> =
        name.map(|n| (fqdn(n), RrType::from(rtype.unwrap_or("A")), None));
    loop {
        let mut req = c.list_resource_record_sets().hosted_zone_id(zone);
        if let Some((n, t, id)) = &start {
            req = req
                .start_record_name(n)
                .start_record_type(t.clone())
                .set_start_record_identifier(id.clone());
        }
        let page = req
            .send()
            .await
            .map_err(|e| aws_error(&format!("listing zone {zone}"), endpoint, e))?;
        let mut past_name = false;
        for r in page.resource_record_sets() {
            let rec = Record::from_aws(r);
            if let Some(n) = name {
                if fqdn(&rec.name) != fqdn(n) {
                    past_name = true;
                    continue;
                }
            }
            if rtype.is_some_and(|t| !rec.rtype.eq_ignore_ascii_case(t)) {
                continue;
            }
            out.push(rec);
        }
        if !page.is_truncated() || past_name {
            return Ok(out);
        }
        start = Some((
            page.next_record_name().unwrap_or_default().to_string(),
            page.next_record_type().cloned().unwrap_or(RrType::A),
            page.next_record_identifier().map(str::to_string),
        ));
    }
}

async fn change(
    c: &Client,
    endpoint: &Endpoint,
    zone: &str,
    changes: Vec<Change>,
    comment: &str,
) -> Result<Applied, ActionError> {
    let batch = ChangeBatch::builder()
        .set_changes(Some(changes))
        .comment(comment)
        .build()
        .map_err(|e| ActionError::permanent(e.to_string()))?;
    let out = c
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| aws_error(&format!("changing zone {zone}"), endpoint, e))?;
    let Some(info) = out.change_info() else {
        return Ok(Applied {
            change_id: None,
            status: "PENDING".into(),
        });
    };
    Ok(Applied {
        change_id: Some(info.id().trim_start_matches("/change/").to_string()),
        status: info.status().as_str().to_string(),
    })
}

/// A submitted change.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Applied {
    /// The change id to wait for (null when nothing needed changing).
    pub change_id: Option<String>,
    /// "PENDING" or "INSYNC" ("UNCHANGED" when nothing was sent).
    pub status: String,
}

fn unchanged() -> Applied {
    Applied {
        change_id: None,
        status: "UNCHANGED".into(),
    }
}

/// The change id a dry-run's change returns: `dns::wait_change` has nothing to wait for.
const PREDICTED: &str = "predicted";

/// A dry-run's answer for a change it would submit.
fn predicted() -> Applied {
    Applied {
        change_id: Some(PREDICTED.into()),
        status: "PENDING".into(),
    }
}

/// Records found, with the weight of each set identifier.
fn records_output(records: Vec<Record>) -> Records {
    let weights = records
        .iter()
        .filter_map(|r| Some((r.set_identifier.clone()?, r.weight?)))
        .collect();
    Records { records, weights }
}

/// A record type left out is A.
fn a_type() -> String {
    "A".into()
}
