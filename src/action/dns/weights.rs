//! Shifting traffic: the weights of a weighted record.

use super::*;

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

fn weights_line(w: &BTreeMap<String, i64>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

action! {
    /// Shift traffic between the weighted records of one name (one change batch), keeping each
    /// record's target and health check.
    SetWeights(SetWeightsInput) -> WeightsChanged = Spec::converge("dns", "set_weights").retries(2)
}

impl Action for SetWeights {
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
            change_id: Some(PREDICTED.into()),
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
            changes.push(updated.change(ChangeAction::Upsert)?);
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
