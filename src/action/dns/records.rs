//! Reading record sets: records, get.

use super::*;
use crate::action::world::World;

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

    fn predict_in(input: &GetInput, world: &World) -> Option<Result<Records, ActionError>> {
        if world.regions.is_empty() {
            return None;
        }
        let records = world
            .regions
            .values()
            .filter(|p| {
                input
                    .set_identifier
                    .as_deref()
                    .is_none_or(|id| id == p.name)
            })
            .map(|p| Record {
                name: input.name.clone(),
                rtype: input.rtype.clone(),
                set_identifier: Some(p.name.clone()),
                weight: Some(p.dns_weight),
                ttl: Some(60),
                values: vec![],
                alias: None,
                health_check_id: None,
                failover: None,
            })
            .collect();
        Some(Ok(records_output(records)))
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
