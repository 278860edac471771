//! `dns::` — AWS Route53: records, weighted traffic shifts, change tracking, health checks.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, ECS,
//! instance metadata). `endpoint_url` points the client elsewhere (moto, LocalStack).
//! Every action takes `zone`: a hosted zone id (Z123...) or its name (example.com).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, ResourceRecordSetFailover, RrType,
};
use aws_sdk_route53::Client;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Cx, Dur, ErrorKind, Spec};

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
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let region = endpoint
        .region
        .clone()
        .unwrap_or_else(|| "us-east-1".into());
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(region));
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    CLIENTS.keep(endpoint.clone(), Client::new(&config))
}

fn where_(endpoint: &Endpoint) -> String {
    endpoint
        .endpoint_url
        .clone()
        .unwrap_or_else(|| "Route53".into())
}

fn aws_error<E, R>(what: &str, endpoint: &Endpoint, e: SdkError<E, R>) -> ActionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let kind = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ErrorKind::TransientNotSent,
        SdkError::ServiceError(s) => match s.err().code() {
            Some("Throttling" | "PriorRequestNotComplete" | "ServiceUnavailable") => {
                ErrorKind::TransientMaybeApplied
            }
            _ => ErrorKind::Permanent,
        },
        SdkError::ResponseError(_) => ErrorKind::TransientMaybeApplied,
        _ => ErrorKind::Permanent,
    };
    let detail = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("")
        ),
        None => {
            let full = DisplayErrorContext(&e).to_string();
            if full.contains("loading credentials") || full.contains("no credentials") {
                "no AWS credentials could be loaded: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 AWS_PROFILE, or run where a role provides them"
                    .to_string()
            } else {
                // The causes, without the debug dump of the request that follows them.
                full.split(" (DispatchFailure")
                    .next()
                    .unwrap_or(&full)
                    .to_string()
            }
        }
    };
    ActionError {
        message: format!("{what} ({}): {detail}", where_(endpoint)),
        kind,
    }
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

// ---- records and get -----------------------------------------------------------------------

input! {
    route53:
    pub struct RecordsInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// Only records of this name.
        pub name: Option<String>,
        /// Only records of this type (A, CNAME, ...).
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        pub rtype: Option<String>,
    }
}

/// Records found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Records {
    /// The matching record sets.
    pub records: Vec<Record>,
    /// Weight per set identifier, for weighted records.
    pub weights: BTreeMap<String, i64>,
}

fn records_output(records: Vec<Record>) -> Records {
    let weights = records
        .iter()
        .filter_map(|r| Some((r.set_identifier.clone()?, r.weight?)))
        .collect();
    Records { records, weights }
}

pub struct RecordsAction;
pub struct Get;

impl Action for RecordsAction {
    type Input = RecordsInput;
    type Output = Records;

    fn spec() -> Spec {
        Spec::read(
            "dns",
            "records",
            "List a hosted zone's record sets (all pages), optionally of one name and type.",
        )
    }

    fn describe(input: &RecordsInput) -> String {
        format!(
            "records of {}{}",
            input.zone,
            input
                .name
                .as_deref()
                .map(|n| format!(" named {n}"))
                .unwrap_or_default()
        )
    }

    fn predict(_: &RecordsInput) -> Records {
        records_output(vec![])
    }

    async fn run(input: RecordsInput, _cx: Cx) -> Result<Records, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        Ok(records_output(
            list(
                &c,
                &endpoint,
                &zone,
                input.name.as_deref(),
                input.rtype.as_deref(),
            )
            .await?,
        ))
    }
}

input! {
    route53:
    pub struct GetInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The record's name.
        pub name: String,
        /// Its type (default A).
        #[serde(default = "a_type", rename = "type")]
        pub rtype: String,
        /// Only the record with this set identifier.
        pub set_identifier: Option<String>,
    }
}

fn a_type() -> String {
    "A".into()
}

impl Action for Get {
    type Input = GetInput;
    type Output = Records;

    fn spec() -> Spec {
        Spec::read(
            "dns",
            "get",
            "The record sets of one name and type (all weighted ones, or one set identifier).",
        )
    }

    fn describe(input: &GetInput) -> String {
        format!("{} {} in {}", input.name, input.rtype, input.zone)
    }

    fn predict(_: &GetInput) -> Records {
        records_output(vec![])
    }

    async fn run(input: GetInput, _cx: Cx) -> Result<Records, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let mut found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype)).await?;
        if let Some(id) = &input.set_identifier {
            found.retain(|r| r.set_identifier.as_deref() == Some(id.as_str()));
        }
        Ok(records_output(found))
    }
}

// ---- upsert and delete ---------------------------------------------------------------------

input! {
    route53:
    pub struct UpsertInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The record sets to create or replace, in one change batch.
        pub records: Vec<Record>,
    }
}

pub struct Upsert;

fn check_weight(r: &Record) -> Result<(), ActionError> {
    match r.weight {
        Some(w) if !(0..=255).contains(&w) => Err(ActionError::permanent(format!(
            "{}: weight {w} is outside 0–255",
            r.name
        ))),
        Some(_) if r.set_identifier.is_none() => Err(ActionError::permanent(format!(
            "{}: a weighted record needs a set_identifier",
            r.name
        ))),
        _ => Ok(()),
    }
}

impl Action for Upsert {
    type Input = UpsertInput;
    type Output = Applied;

    fn spec() -> Spec {
        Spec::converge("dns", "upsert", "Create or replace record sets (UPSERT) in one change batch; records already so are left alone.").retries(2)
    }

    fn describe(input: &UpsertInput) -> String {
        let shown: Vec<String> = input.records.iter().map(Record::shown).collect();
        format!("upsert in {}: {}", input.zone, shown.join("; "))
    }

    fn predict(_: &UpsertInput) -> Applied {
        Applied {
            change_id: Some("predicted".into()),
            status: "PENDING".into(),
        }
    }

    async fn run(input: UpsertInput, _cx: Cx) -> Result<Applied, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let existing = list(&c, &endpoint, &zone, None, None).await?;
        let mut changes = Vec::new();
        for r in &input.records {
            check_weight(r)?;
            let mut wanted = r.clone();
            wanted.name = fqdn(&wanted.name);
            wanted.rtype = wanted.rtype.to_ascii_uppercase();
            let same = existing.iter().any(|e| {
                let mut e = e.clone();
                e.name = fqdn(&e.name);
                e == wanted
            });
            if !same {
                changes.push(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(r.to_aws()?)
                        .build()
                        .map_err(|e| ActionError::permanent(e.to_string()))?,
                );
            }
        }
        if changes.is_empty() {
            return Ok(unchanged());
        }
        change(&c, &endpoint, &zone, changes, "runbook dns::upsert").await
    }
}

input! {
    route53:
    pub struct DeleteInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The record's name.
        pub name: String,
        /// Its type (default A).
        #[serde(default = "a_type", rename = "type")]
        pub rtype: String,
        /// The set identifier of the one record to delete (weighted and failover records).
        pub set_identifier: Option<String>,
    }
}

pub struct Delete;

impl Action for Delete {
    type Input = DeleteInput;
    type Output = Applied;

    fn spec() -> Spec {
        Spec::converge(
            "dns",
            "delete",
            "Delete a record set as it now is (a no-op when it does not exist).",
        )
        .retries(2)
    }

    fn describe(input: &DeleteInput) -> String {
        let id = input
            .set_identifier
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        format!(
            "delete {} {}{id} in {}",
            input.name, input.rtype, input.zone
        )
    }

    fn predict(_: &DeleteInput) -> Applied {
        Applied {
            change_id: Some("predicted".into()),
            status: "PENDING".into(),
        }
    }

    async fn run(input: DeleteInput, _cx: Cx) -> Result<Applied, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype)).await?;
        let Some(current) = found
            .into_iter()
            .find(|r| r.set_identifier == input.set_identifier)
        else {
            return Ok(unchanged());
        };
        // Route53 deletes only an exact match of the record as it stands.
        let change_ = Change::builder()
            .action(ChangeAction::Delete)
            .resource_record_set(current.to_aws()?)
            .build()
            .map_err(|e| ActionError::permanent(e.to_string()))?;
        change(&c, &endpoint, &zone, vec![change_], "runbook dns::delete").await
    }
}

// ---- set_weights ---------------------------------------------------------------------------

input! {
    route53:
    pub struct SetWeightsInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The weighted record's name, e.g. "orchestrator.example.com".
        pub name: String,
        /// Its type (default A).
        #[serde(default = "a_type", rename = "type")]
        pub rtype: String,
        /// New weight per set identifier, e.g. #{ "us-east-1": 0, "eu-west-1": 100 }; others keep theirs.
        pub weights: BTreeMap<String, i64>,
    }
}

/// Weights before and after.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WeightsChanged {
    /// The change to wait for (null when every weight already was as asked).
    pub change_id: Option<String>,
    /// "PENDING", "INSYNC" or "UNCHANGED".
    pub status: String,
    /// Weight per set identifier before.
    pub before: BTreeMap<String, i64>,
    /// Weight per set identifier after.
    pub after: BTreeMap<String, i64>,
}

pub struct SetWeights;

fn weights_line(w: &BTreeMap<String, i64>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

impl Action for SetWeights {
    type Input = SetWeightsInput;
    type Output = WeightsChanged;

    fn spec() -> Spec {
        Spec::converge("dns", "set_weights", "Shift traffic between the weighted records of one name (one change batch), keeping each record's target and health check.").retries(2)
    }

    fn describe(input: &SetWeightsInput) -> String {
        format!(
            "set weights of {} {}: {}",
            input.name,
            input.rtype,
            weights_line(&input.weights)
        )
    }

    fn predict(input: &SetWeightsInput) -> WeightsChanged {
        WeightsChanged {
            change_id: Some("predicted".into()),
            status: "PENDING".into(),
            before: BTreeMap::new(),
            after: input.weights.clone(),
        }
    }

    async fn preview(input: SetWeightsInput, _cx: Cx) -> Option<String> {
        let (c, endpoint, zone) = zone_client(&input.endpoint_url, &input.region, &input.zone)
            .await
            .ok()?;
        let found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype))
            .await
            .ok()?;
        Some(format!(
            "now {}",
            weights_line(&records_output(found).weights)
        ))
    }

    async fn run(input: SetWeightsInput, _cx: Cx) -> Result<WeightsChanged, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype)).await?;
        let by_id: HashMap<String, &Record> = found
            .iter()
            .filter_map(|r| Some((r.set_identifier.clone()?, r)))
            .collect();
        let before = records_output(found.clone()).weights;
        let mut after = before.clone();
        let mut changes = Vec::new();
        for (id, weight) in &input.weights {
            if !(0..=255).contains(weight) {
                return Err(ActionError::permanent(format!(
                    "weight {weight} for {id} is outside 0–255"
                )));
            }
            let Some(current) = by_id.get(id) else {
                let mut known: Vec<&str> = by_id.keys().map(String::as_str).collect();
                known.sort();
                return Err(ActionError::permanent(format!(
                    "{} {} has no weighted record '{id}'; it has {}",
                    input.name,
                    input.rtype,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            after.insert(id.clone(), *weight);
            if current.weight == Some(*weight) {
                continue;
            }
            let mut updated = (*current).clone();
            updated.weight = Some(*weight);
            changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(updated.to_aws()?)
                    .build()
                    .map_err(|e| ActionError::permanent(e.to_string()))?,
            );
        }
        if after.values().all(|w| *w == 0) && !after.is_empty() {
            // Route53 then answers all records equally: almost never what a shift means.
            return Err(ActionError::permanent(format!(
                "every weight of {} would be 0, and Route53 then spreads traffic evenly across all of them; leave one above 0",
                input.name
            )));
        }
        if changes.is_empty() {
            return Ok(WeightsChanged {
                change_id: None,
                status: "UNCHANGED".into(),
                before,
                after,
            });
        }
        let applied = change(&c, &endpoint, &zone, changes, "runbook dns::set_weights").await?;
        Ok(WeightsChanged {
            change_id: applied.change_id,
            status: applied.status,
            before,
            after,
        })
    }
}

// ---- wait_change and health checks ---------------------------------------------------------

input! {
    route53:
    pub struct WaitChangeInput {
        /// The change id an upsert, delete or set_weights returned (null: nothing to wait for).
        pub change_id: Option<String>,
        /// Time between checks (default "2s").
        #[serde(default = "two_seconds")]
        pub interval: Dur,
    }
}

fn two_seconds() -> Dur {
    Dur(Duration::from_secs(2))
}

/// A change that has reached every Route53 name server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InSync {
    /// "INSYNC" (or "UNCHANGED" when there was nothing to wait for).
    pub status: String,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

pub struct WaitChange;

impl Action for WaitChange {
    type Input = WaitChangeInput;
    type Output = InSync;

    fn spec() -> Spec {
        Spec::read(
            "dns",
            "wait_change",
            "Wait until a Route53 change is INSYNC (propagated to every Route53 name server).",
        )
        .primary("change_id")
        .timeout(300)
        .retries(0)
    }

    fn describe(input: &WaitChangeInput) -> String {
        format!(
            "wait for change {} to be in sync",
            input.change_id.as_deref().unwrap_or("(none)")
        )
    }

    fn predict(_: &WaitChangeInput) -> InSync {
        InSync {
            status: "INSYNC".into(),
            waited_ms: 0,
        }
    }

    async fn run(input: WaitChangeInput, cx: Cx) -> Result<InSync, ActionError> {
        let started = Instant::now();
        let Some(id) = input.change_id.clone().filter(|id| id != "predicted") else {
            return Ok(InSync {
                status: "UNCHANGED".into(),
                waited_ms: 0,
            });
        };
        let endpoint = Endpoint {
            endpoint_url: input.endpoint_url.clone(),
            region: input.region.clone(),
        };
        let c = client(&endpoint).await;
        loop {
            let out = c
                .get_change()
                .id(&id)
                .send()
                .await
                .map_err(|e| aws_error(&format!("change {id}"), &endpoint, e))?;
            let status = out
                .change_info()
                .map(|i| i.status().clone())
                .unwrap_or(ChangeStatus::Pending);
            if status == ChangeStatus::Insync {
                return Ok(InSync {
                    status: "INSYNC".into(),
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            cx.note(format!("change {id}: {}", status.as_str()));
            if started.elapsed() + input.interval.0 > cx.timeout {
                return Err(ActionError::permanent(format!(
                    "change {id} was still {} after {}",
                    status.as_str(),
                    humantime::format_duration(cx.timeout)
                )));
            }
            tokio::time::sleep(input.interval.0).await;
        }
    }
}

/// One Route53 health check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthCheck {
    /// Its id (what a record's health_check_id names).
    pub id: String,
    /// HTTP, HTTPS, TCP, ...
    #[serde(rename = "type")]
    pub htype: String,
    /// The checked name.
    pub fqdn: Option<String>,
    /// The checked address.
    pub ip_address: Option<String>,
    /// The checked port.
    pub port: Option<i32>,
    /// The checked path.
    pub path: Option<String>,
}

/// The account's health checks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthChecks {
    /// Every health check (all pages).
    pub health_checks: Vec<HealthCheck>,
}

pub struct HealthChecksAction;

impl Action for HealthChecksAction {
    type Input = Endpoint;
    type Output = HealthChecks;

    fn spec() -> Spec {
        Spec::read(
            "dns",
            "health_checks",
            "List the Route53 health checks (all pages): id, type, target, port, path.",
        )
    }

    fn describe(input: &Endpoint) -> String {
        format!("health checks in {}", where_(input))
    }

    fn predict(_: &Endpoint) -> HealthChecks {
        HealthChecks {
            health_checks: vec![],
        }
    }

    async fn run(input: Endpoint, _cx: Cx) -> Result<HealthChecks, ActionError> {
        let c = client(&input).await;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = c
                .list_health_checks()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| aws_error("listing health checks", &input, e))?;
            for h in page.health_checks() {
                let cfg = h.health_check_config();
                out.push(HealthCheck {
                    id: h.id().to_string(),
                    htype: cfg
                        .map(|c| c.r#type().as_str().to_string())
                        .unwrap_or_default(),
                    fqdn: cfg
                        .and_then(|c| c.fully_qualified_domain_name())
                        .map(str::to_string),
                    ip_address: cfg.and_then(|c| c.ip_address()).map(str::to_string),
                    port: cfg.and_then(|c| c.port()),
                    path: cfg.and_then(|c| c.resource_path()).map(str::to_string),
                });
            }
            if !page.is_truncated() {
                return Ok(HealthChecks { health_checks: out });
            }
            marker = page.next_marker().map(str::to_string);
        }
    }
}
