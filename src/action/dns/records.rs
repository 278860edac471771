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

action! {
    /// List a hosted zone's record sets (all pages), optionally of one name and type.
    RecordsAction(RecordsInput) -> Records = Spec::read("dns", "records")
}

impl Action for RecordsAction {
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
    /// One record set by name and type, or one record of it by set identifier: what
    /// `dns::get` reads and `dns::delete` deletes.
    pub struct RecordKey {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The record's name.
        pub name: String,
        /// Its type (default A).
        #[serde(default = "a_type", rename = "type")]
        pub rtype: String,
        /// Just the one record with this set identifier (weighted and failover records).
        pub set_identifier: Option<String>,
    }
}

action! {
    /// The record sets of one name and type (all weighted ones, or one set identifier).
    Get(RecordKey) -> Records = Spec::read("dns", "get")
}

impl Action for Get {
    fn describe(input: &RecordKey) -> String {
        format!("{} {} in {}", input.name, input.rtype, input.zone)
    }

    fn predict(_: &RecordKey) -> Records {
        records_output(vec![])
    }

    fn predict_in(input: &RecordKey, world: &World) -> Option<Result<Records, ActionError>> {
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

    async fn run(input: RecordKey, _cx: Cx) -> Result<Records, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let mut found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype)).await?;
        if let Some(id) = &input.set_identifier {
            found.retain(|r| r.set_identifier.as_deref() == Some(id.as_str()));
        }
        Ok(records_output(found))
    }
}
